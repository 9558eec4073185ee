"""Values and shapes no exporter should send: each is refused, by span or by request,
and never costs the rest of the batch or answers 5xx (exporters drop a batch on 500
and resend one on 503 forever)."""

import json

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from controlplane.tenancy import tenant_scope
from tracing.models import Span

pytestmark = pytest.mark.django_db(transaction=True)

TRACE = "5b8efff798038103d269b633813fc60c"


def span(span_id: str, name: str, attributes=(), **fields) -> dict:
    return {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": list(attributes),
        **fields,
    }


def tokens(value: dict, key="gen_ai.usage.input_tokens") -> list:
    return [{"key": key, "value": value}]


def batch(*spans) -> dict:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


BAD_SPANS = {
    "start at 2^63": span(
        "0000000000000001", "start-2-63", startTimeUnixNano=str(2**63), endTimeUnixNano=str(2**63)
    ),
    "end at 2^64-1": span("0000000000000002", "end-2-64", endTimeUnixNano=str(2**64 - 1)),
    "+inf tokens": span("0000000000000003", "inf-tokens", tokens({"doubleValue": "Infinity"})),
    "-inf tokens": span(
        "0000000000000004",
        "ninf-tokens",
        tokens({"doubleValue": "-Infinity"}, "gen_ai.usage.output_tokens"),
    ),
    "1e308 tokens": span("0000000000000005", "huge-tokens", tokens({"doubleValue": 1e308})),
    "40-digit tokens": span(
        "0000000000000006",
        "digits-tokens",
        tokens({"stringValue": "9" * 40}, "llm.token_count.prompt"),
    ),
    "int64 tokens": span("0000000000000007", "int64-tokens", tokens({"intValue": str(2**63 - 1)})),
    "negative tokens": span("0000000000000008", "negative-tokens", tokens({"intValue": "-5"})),
}


def post_json(live_server, key, doc) -> httpx.Response:
    return httpx.post(
        f"{live_server.url}/v1/traces",
        content=json.dumps(doc),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


def test_it_rejects_out_of_range_spans_and_keeps_the_rest(live_server, acme, make_key):
    good = span("00000000000000ff", "good", tokens({"intValue": "120"}))
    resp = post_json(live_server, make_key(acme, "ingest"), batch(good, *BAD_SPANS.values()))
    assert resp.status_code == 200, resp.text
    partial = resp.json()["partialSuccess"]
    assert partial["rejectedSpans"] == str(len(BAD_SPANS))
    # The first five are named, the rest counted.
    for bad in list(BAD_SPANS.values())[:5]:
        assert repr(bad["name"]) in partial["errorMessage"]
    assert "2^63" in partial["errorMessage"] and "finite" in partial["errorMessage"]
    with tenant_scope(acme):
        assert list(Span.objects.values_list("name", "input_tokens")) == [("good", 120)]


CONTAINERS = {
    "resourceSpans": ["x", 5, {"a": 1}, [1, "x"]],
    "scopeSpans": ["x", 5, {"a": 1}, [1]],
    "spans": ["x", 5, {"a": 1}, [1, "x"]],
    "links": ["x", 5, {"a": 1}, [1]],
}


def _with(field: str, value) -> dict:
    if field == "resourceSpans":
        return {"resourceSpans": value}
    if field == "scopeSpans":
        return {"resourceSpans": [{"scopeSpans": value}]}
    if field == "spans":
        return {"resourceSpans": [{"scopeSpans": [{"spans": value}]}]}
    return batch(span("0000000000000009", "linked", links=value))


@pytest.mark.parametrize(
    "field,value", [(f, v) for f, values in CONTAINERS.items() for v in values]
)
def test_it_refuses_containers_of_the_wrong_type_with_400(
    live_server, acme, make_key, field, value
):
    resp = post_json(live_server, make_key(acme, "ingest"), _with(field, value))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid" and field in resp.json()["detail"]


def test_it_refuses_over_range_protobuf_spans_over_http_and_grpc(
    live_server, grpc_address, acme, make_key
):
    from google.protobuf import json_format

    key = make_key(acme, "ingest")
    doc = batch(
        span("00000000000000aa", "kept-http"), BAD_SPANS["start at 2^63"], BAD_SPANS["+inf tokens"]
    )
    from tracing.ingest.decode import decode_request

    request = decode_request(json.dumps(doc).encode(), "application/json")
    resp = httpx.post(
        f"{live_server.url}/v1/traces",
        content=request.SerializeToString(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
    )
    assert resp.status_code == 200, resp.content
    answer = trace_service_pb2.ExportTraceServiceResponse.FromString(resp.content)
    assert answer.partial_success.rejected_spans == 2

    # The same spans over gRPC, with new span ids so they are not duplicates.
    again = json_format.ParseDict(json_format.MessageToDict(request), type(request)())
    for i, s in enumerate(again.resource_spans[0].scope_spans[0].spans):
        s.span_id = bytes([0, 0, 0, 0, 0, 0, 1, i + 1])
        s.name = s.name.replace("http", "grpc")
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(grpc_address))
    answer = stub.Export(again, metadata=(("authorization", f"Bearer {key}"),))
    assert answer.partial_success.rejected_spans == 2
    assert "2^63" in answer.partial_success.error_message
    with tenant_scope(acme):
        assert sorted(Span.objects.values_list("name", flat=True)) == ["kept-grpc", "kept-http"]


# SQLite stores 2**40 in the column PostgreSQL refuses, so only PostgreSQL refuses it.
@pytest.mark.postgres
def test_it_answers_400_and_invalid_argument_for_a_value_storage_refuses(
    live_server, grpc_address, acme, make_key, monkeypatch
):
    """The net under the span checks: a value the database refuses is the request's
    fault (400 / INVALID_ARGUMENT), not an outage the exporter should retry."""
    from tracing.ingest import normalise

    monkeypatch.setattr(normalise, "MAX_TOKENS", 2**63 - 1)  # let one past the check
    key = make_key(acme, "ingest")
    doc = batch(span("00000000000000bb", "big", tokens({"intValue": str(2**40)})))
    resp = post_json(live_server, key, doc)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid", resp.text

    from tracing.ingest.decode import decode_request

    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(grpc_address))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Export(
            decode_request(json.dumps(doc).encode(), "application/json"),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_it_stores_a_span_whose_texts_carry_nul(live_server, acme, make_key):
    """PostgreSQL's text refuses NUL: it is dropped, not the batch."""
    nul = {"stringValue": "sup\x00port"}
    doc = batch(
        span("00000000000000cc", "na\x00me", [{"key": "gen_ai.agent.name", "value": nul},
                                              {"key": "gen_ai.conversation.id", "value": nul}],
             status={"code": 2, "message": "bo\x00om"}),
    )  # fmt: skip
    resp = post_json(live_server, make_key(acme, "ingest"), doc)
    assert resp.status_code == 200, resp.text
    with tenant_scope(acme):
        stored = Span.objects.get()
        assert (stored.name, stored.session_id, stored.status_message) == (
            "name", "support", "boom",
        )  # fmt: skip
