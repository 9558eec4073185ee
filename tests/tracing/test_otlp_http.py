import gzip
import json
import threading
import time
import uuid

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from controlplane.tenancy import tenant_scope
from tests.tracing.otlp import agent_trace, provider_for
from tracing import selectors
from tracing.models import Span, StatusCode, Trace

pytestmark = pytest.mark.django_db(transaction=True)


def exporter(live_server, key, **kwargs):
    return OTLPSpanExporter(
        endpoint=f"{live_server.url}/v1/traces",
        headers={"Authorization": f"Bearer {key}"},
        **kwargs,
    )


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_it_stores_what_the_sdk_exporter_sends(live_server, acme, make_key, compression):
    provider = provider_for(
        exporter(live_server, make_key(acme, "ingest"), compression=compression)
    )
    trace_id, conversation = agent_trace(provider, steps=3)
    provider.shutdown()

    with tenant_scope(acme):
        trace = Trace.objects.get(trace_id=uuid.UUID(int=trace_id))
        spans = list(Span.objects.filter(trace_id=trace.trace_id).order_by("start_ns"))
    assert trace.span_count == 7 and len(spans) == 7
    assert trace.name == "invoke_agent support" and trace.service_name == "support-agent"
    assert trace.session_id == "conv-1" and trace.input_tokens == 303
    labels = [selectors.span_labels(span=s) for s in spans]
    assert [s["operation"] for s in labels] == ["invoke_agent"] + ["chat", "execute_tool"] * 3
    chat = spans[5]
    assert labels[5]["request_model"] == "claude-sonnet-4" and labels[5]["provider"] == "anthropic"

    with tenant_scope(acme):
        detail = selectors.span_detail(span=chat)
    # The conversation comes back as it went in, with the e-mail redacted.
    sent = conversation[:5]
    got = detail["input_messages"]
    assert len(got) == 5
    assert got[0]["parts"][0]["content"].startswith("Where is my order? My e-mail is [EMAIL:")
    assert got[1:] == sent[1:]
    assert detail["system_instructions"] == [
        {"type": "text", "content": "You are a support agent."}
    ]
    assert chat.redactions == {"EMAIL": 1}
    tool = spans[6]
    with tenant_scope(acme):
        tool_detail = selectors.span_detail(span=tool)
    assert tool_detail["tool_call_result"].startswith("Order 1002 shipped")
    assert tool_detail["resource"]["service.name"] == "support-agent"


def test_it_stores_a_retried_span_once(live_server, acme, make_key):
    key = make_key(acme, "ingest")
    body = json.dumps(
        one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    ).encode()
    for _ in range(2):
        resp = httpx.post(
            f"{live_server.url}/v1/traces",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert resp.status_code == 200, resp.text
    with tenant_scope(acme):
        assert Span.objects.count() == 1
        assert Trace.objects.get().span_count == 1


@pytest.mark.django_db(transaction=True)
def test_it_counts_and_publishes_a_span_once_when_a_retry_races_the_first_attempt(
    acme, monkeypatch
):
    from tracing.ingest import pipeline
    from tracing.ingest.decode import decode_request
    from tracing.signals import spans_ingested

    body = json.dumps(
        one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    ).encode()
    # The retry arrives before the first attempt commits: the early check finds nothing.
    monkeypatch.setattr(pipeline, "_drop_stored", lambda tenant_id, collected, result: collected)
    published = []
    listener = lambda sender, spans, **kw: published.extend(spans)  # noqa: E731
    spans_ingested.connect(listener)
    try:
        first, retry = [
            pipeline.spans_ingest(
                tenant_id=acme.id, request=decode_request(body, "application/json")
            )
            for _ in range(2)
        ]
    finally:
        spans_ingested.disconnect(listener)
    assert (first.accepted, first.duplicates) == (1, 0)
    assert (retry.accepted, retry.duplicates) == (0, 1)
    assert published == [("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")]
    with tenant_scope(acme):
        assert Span.objects.count() == 1
        trace = Trace.objects.get()
        assert (trace.span_count, trace.error_count) == (1, 1)


@pytest.mark.postgres  # SQLite keeps spans' primary key: the retry race test covers it
@pytest.mark.django_db(transaction=True)
def test_it_stores_a_span_once_when_two_requests_write_it_at_the_same_time(acme, monkeypatch):
    """PostgreSQL has no unique key on spans: the second writer of a trace waits for the
    first to commit, then leaves out what it stored."""
    from django.db import connection

    from tracing.ingest import pipeline, rows
    from tracing.ingest.decode import decode_request

    def request(span_id):
        body = json.dumps(one_span_request("5b8efff798038103d269b633813fc60c", span_id))
        return decode_request(body.encode(), "application/json")

    # A first span stores the resource, so the racing requests have no payload to
    # write and meet at the trace's lock.
    pipeline.spans_ingest(tenant_id=acme.id, request=request("aaa19b7ec3c1b174"))
    monkeypatch.setattr(pipeline, "_drop_stored", lambda tenant_id, collected, result: collected)
    first_locked = threading.Event()
    real_lock = rows.lock_traces

    waited = []

    def waiting_on():
        with connection.cursor() as cursor:
            cursor.execute("SELECT locktype FROM pg_locks WHERE NOT granted")
            waited.extend(row[0] for row in cursor.fetchall())
        return waited

    def lock_then_hold(tenant_id, trace_ids):
        locked = real_lock(tenant_id, trace_ids)
        if not first_locked.is_set():
            first_locked.set()  # the first writer: hold the lock until the second waits
            deadline = time.monotonic() + 10
            while not waiting_on() and time.monotonic() < deadline:
                time.sleep(0.01)
        return locked

    monkeypatch.setattr(rows, "lock_traces", lock_then_hold)
    results = {}

    def ingest(name):
        try:
            results[name] = pipeline.spans_ingest(
                tenant_id=acme.id, request=request("eee19b7ec3c1b174")
            )
        finally:
            connection.close()

    first = threading.Thread(target=ingest, args=("first",))
    first.start()
    assert first_locked.wait(10)
    second = threading.Thread(target=ingest, args=("second",))
    second.start()
    first.join(20)
    second.join(20)
    assert waited == ["advisory"]
    assert sorted((r.accepted, r.duplicates) for r in results.values()) == [(0, 1), (1, 0)]
    with tenant_scope(acme):
        assert Span.objects.count() == 2
        assert Trace.objects.get().span_count == 2


def one_span_request(trace_id: str, span_id: str, name: str = "chat", **attrs) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-agent"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": name,
                                "kind": 3,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001500000000",
                                "attributes": [
                                    {"key": k, "value": {"stringValue": v}}
                                    for k, v in attrs.items()
                                ],
                                "status": {"code": 2, "message": "boom"},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_it_keeps_the_valid_spans_of_a_partly_invalid_batch(live_server, acme, make_key):
    good = one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "good")
    bad = one_span_request("nothex", "eee19b7ec3c1b174", "bad")
    good["resourceSpans"][0]["scopeSpans"][0]["spans"] += bad["resourceSpans"][0]["scopeSpans"][0][
        "spans"
    ]
    resp = httpx.post(
        f"{live_server.url}/v1/traces",
        json=good,
        headers={"Authorization": f"Bearer {make_key(acme, 'ingest')}"},
    )
    assert resp.status_code == 200
    partial = resp.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert (
        "trace_id must be 16 bytes" in partial["errorMessage"]
        and "'bad'" in partial["errorMessage"]
    )
    with tenant_scope(acme):
        span = Span.objects.get()
    assert span.name == "good" and span.status_code == StatusCode.ERROR
    assert span.duration_ms == 1500.0


def post(live_server, key, body: bytes, content_type="application/x-protobuf", **headers):
    headers = {"Content-Type": content_type, **headers}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{live_server.url}/v1/traces", content=body, headers=headers)


def test_it_refuses_bad_requests_with_clear_answers(live_server, acme, make_key, settings):
    key = make_key(acme, "ingest")
    resp = post(live_server, key, b"\xff\xff not protobuf")
    assert resp.status_code == 400
    from google.rpc import status_pb2

    status = status_pb2.Status.FromString(resp.content)
    assert "not a valid OTLP protobuf" in status.message

    resp = post(live_server, key, b"{not json", "application/json")
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["detail"]
    assert post(live_server, None, b"").status_code == 401
    assert post(live_server, "fd_unknown", b"").status_code == 401
    assert post(live_server, make_key(acme, "read"), b"").status_code == 403
    resp = post(live_server, key, b"x", "text/plain")
    assert resp.status_code == 415
    resp = post(live_server, key, b"x", "application/x-protobuf", **{"Content-Encoding": "br"})
    assert resp.status_code == 400

    settings.INGEST_MAX_BODY_BYTES = 2048
    big = json.dumps(
        one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", note="x" * 5000)
    ).encode()
    assert post(live_server, key, big, "application/json").status_code == 413
    # A small gzip body that inflates past the limit is refused too.
    resp = post(
        live_server, key, gzip.compress(big), "application/json", **{"Content-Encoding": "gzip"}
    )
    assert resp.status_code == 413
    assert httpx.get(f"{live_server.url}/v1/traces").status_code == 405


def test_it_answers_429_over_the_tenants_rate(live_server, acme, make_key):
    acme.ingest_spans_per_second = 1
    acme.save()
    key = make_key(acme, "ingest")
    body = json.dumps(
        one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    ).encode()
    answers = [post(live_server, key, body, "application/json") for _ in range(4)]
    assert [a.status_code for a in answers[:2]] == [200, 200]  # a burst of two passes
    assert answers[2].status_code == 429
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert "rate of 1 spans a second" in answers[2].json()["detail"]


def test_it_answers_503_and_stores_nothing_when_the_blob_store_is_down(
    live_server, acme, make_key, settings
):
    from controlplane.blobstore import get_blob_store

    settings.BLOB_STORE = {
        "backend": "s3",
        "bucket": "nowhere",
        "endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "prefix": "",
    }
    get_blob_store.cache_clear()
    try:
        import random

        noise = " ".join(
            str(random.random()) for _ in range(800)
        )  # does not compress to inline size
        body = json.dumps(
            one_span_request(
                "5b8efff798038103d269b633813fc60c",
                "eee19b7ec3c1b174",
                **{"gen_ai.tool.call.result": noise},
            )
        ).encode()
        resp = post(live_server, make_key(acme, "ingest"), body, "application/json")
    finally:
        get_blob_store.cache_clear()
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    with tenant_scope(acme):
        assert not Span.objects.exists() and not Trace.objects.exists()


def test_it_answers_in_the_requests_encoding(live_server, acme, make_key):
    body = json.dumps(
        one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    ).encode()
    resp = post(live_server, make_key(acme, "ingest"), body, "application/json")
    assert resp.headers["Content-Type"] == "application/json" and resp.json() == {}
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    json_format.ParseDict({"resourceSpans": []}, request)
    resp = post(live_server, make_key(acme, "ingest"), request.SerializeToString())
    assert resp.headers["Content-Type"] == "application/x-protobuf"
    ExportTraceServiceResponse.FromString(resp.content)
