"""Hypothesis sends OTLP batches mixing valid spans with invalid ones (bad ids, times,
token counts, names) as JSON and protobuf over HTTP and as protobuf over gRPC: never a
5xx, every valid span stored, every invalid one counted and named."""

import json
import uuid

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from controlplane.tenancy import tenant_scope
from tests import suites
from tracing.ingest.decode import decode_request
from tracing.models import Span

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_700_000_000_000_000_000
MAX_NAMED = 5  # the pipeline names the first five rejected spans

# Attribute values as exporters send them, including what no column can hold.
values = st.one_of(
    st.text(max_size=40).map(lambda s: {"stringValue": s}),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: {"intValue": str(i)}),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: {"doubleValue": f}),
    st.booleans().map(lambda b: {"boolValue": b}),
    st.lists(st.text(max_size=10).map(lambda s: {"stringValue": s}), max_size=3).map(
        lambda vs: {"arrayValue": {"values": vs}}
    ),
)
keys = st.sampled_from([
    "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.conversation.id",
    "gen_ai.agent.name", "gen_ai.tool.name", "gen_ai.input.messages", "http.method",
    "flightdeck.run.id", "custom.key",
]) | st.text(min_size=1, max_size=20)  # fmt: skip
attributes = st.lists(st.tuples(keys, values), max_size=6).map(
    lambda kvs: [{"key": k, "value": v} for k, v in kvs]
)
tokens = st.integers(0, 2**31 - 1).map(lambda i: {"intValue": str(i)})

# Each way a span is refused, as the change it makes to a valid span.
INVALID = {
    "start at 2^63": {"startTimeUnixNano": str(2**63), "endTimeUnixNano": str(2**63)},
    "end past 2^63": {"endTimeUnixNano": str(2**64 - 1)},
    "end before start": {"endTimeUnixNano": str(T0 - 1)},
    "no start": {"startTimeUnixNano": "0"},
    "short span id": {"spanId": "abcd"},
    "zero trace id": {"traceId": "0" * 32},
    "+inf tokens": {"tokens": {"doubleValue": "Infinity"}},
    "-inf tokens": {"tokens": {"doubleValue": "-Infinity"}},
    "1e308 tokens": {"tokens": {"doubleValue": 1e308}},
    "40-digit tokens": {"tokens": {"stringValue": "7" * 40}},
    "negative tokens": {"tokens": {"intValue": "-1"}},
}


@st.composite
def batches(draw):
    valid = draw(st.integers(0, 6))
    invalid = draw(st.lists(st.sampled_from(sorted(INVALID)), max_size=MAX_NAMED))
    kinds = draw(st.permutations([None] * valid + invalid))
    specs = []
    for i, kind in enumerate(kinds):
        specs.append({
            "kind": kind, "name": f"span-{i}-{kind or 'ok'}", "attributes": draw(attributes),
            "tokens": draw(tokens), "duration": draw(st.integers(0, 10**12)),
            "status": draw(st.sampled_from([0, 1, 2, 7])),
        })  # fmt: skip
    return specs


def span_json(spec: dict, trace_id: str, index: int) -> dict:
    span = {
        "traceId": trace_id, "spanId": f"{index + 1:016x}", "name": spec["name"],
        "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + spec["duration"]),
        "status": {"code": spec["status"]},
    }  # fmt: skip
    change = dict(INVALID.get(spec["kind"], {}))
    token_value = change.pop("tokens", spec["tokens"])
    span.update(change)
    span["attributes"] = [
        *spec["attributes"],
        {"key": "gen_ai.usage.input_tokens", "value": token_value},
    ]
    return span


def send(transport: str, doc: dict, key: str, live_server, grpc_address) -> tuple[int, int, str]:
    """(status, rejected spans, error message); gRPC's status is mapped to HTTP's."""
    body = json.dumps(doc).encode()
    headers = {"Authorization": f"Bearer {key}"}
    if transport == "grpc":
        stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(grpc_address))
        try:
            answer = stub.Export(
                decode_request(body, "application/json"),
                metadata=(("authorization", headers["Authorization"]),),
            )
        except grpc.RpcError as exc:
            status = {grpc.StatusCode.INVALID_ARGUMENT: 400}.get(exc.code(), 500)
            return status, 0, exc.details()
        return 200, answer.partial_success.rejected_spans, answer.partial_success.error_message
    if transport == "http-protobuf":
        content = decode_request(body, "application/json").SerializeToString()
        headers["Content-Type"] = "application/x-protobuf"
    else:
        content = body
        headers["Content-Type"] = "application/json"
    resp = httpx.post(f"{live_server.url}/v1/traces", content=content, headers=headers)
    if resp.status_code != 200:
        return resp.status_code, 0, resp.text
    if transport == "http-protobuf":
        answer = trace_service_pb2.ExportTraceServiceResponse.FromString(resp.content)
        partial = answer.partial_success
        return 200, partial.rejected_spans, partial.error_message
    partial = resp.json().get("partialSuccess", {})
    return 200, int(partial.get("rejectedSpans", 0)), partial.get("errorMessage", "")


@pytest.mark.parametrize("transport", ["http-json", "http-protobuf", "grpc"])
def test_it_stores_every_valid_span_and_names_every_invalid_one(
    transport, live_server, grpc_address, acme, make_key
):
    key = make_key(acme, "ingest")

    @settings(
        max_examples=25, deadline=None, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(specs=batches())
    def check(specs):
        trace_id = uuid.uuid4().hex
        doc = {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
            "scopeSpans": [{"spans": [span_json(s, trace_id, i) for i, s in enumerate(specs)]}],
        }]}  # fmt: skip
        status, rejected, message = send(transport, doc, key, live_server, grpc_address)
        suites.seen("otlp fuzz", status)
        assert status == 200, message
        invalid = [s for s in specs if s["kind"]]
        assert rejected == len(invalid), message
        for spec in invalid:
            assert repr(spec["name"]) in message, (spec["kind"], message)
        with tenant_scope(acme):
            stored = set(
                Span.objects.filter(trace_id=uuid.UUID(trace_id)).values_list("span_id", flat=True)
            )
        assert stored == {i + 1 for i, s in enumerate(specs) if not s["kind"]}

    check()
