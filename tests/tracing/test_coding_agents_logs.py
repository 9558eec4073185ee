"""Coding agents' events over OTLP logs, sent by the OpenTelemetry SDK's own exporters as
Claude Code and Codex CLI send them: folded into sessions, traces and spans."""

import gzip
import json
import uuid

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from controlplane.tenancy import tenant_scope
from tests.tracing.codingagents import CLAUDE_CODE, CODEX, fixture, otlp_json, send
from tracing import selectors
from tracing.codingagents.fold import trace_id_hex
from tracing.models import Span, StatusCode, Trace

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE_SESSION = "6f1c2b9e-3d1a-4b7e-9c55-0e2a7d4b1f10"
CODEX_SESSION = "0199a8b1-7c2d-7e3f-9a4b-5c6d7e8f9a0b"


def http_logs(live_server, key):
    return HttpLogs(
        endpoint=f"{live_server.url}/v1/logs", headers={"Authorization": f"Bearer {key}"}
    )


def spans_of(trace):
    spans = list(Span.objects.filter(trace_id=trace.trace_id).order_by("start_ns", "span_id"))
    return [(selectors.span_labels(span=s), s) for s in spans]


def test_it_folds_a_claude_code_session_sent_over_http(live_server, acme, make_key):
    send(http_logs(live_server, make_key(acme, "ingest")), fixture(CLAUDE_CODE))
    with tenant_scope(acme):
        traces = {t.trace_id.hex: t for t in Trace.objects.filter(session_id=CLAUDE_SESSION)}
        first = traces[trace_id_hex(agent="claude-code", session=CLAUDE_SESSION, prompt="p-1")]
        second = traces[trace_id_hex(agent="claude-code", session=CLAUDE_SESSION, prompt="p-2")]
        assert len(traces) == 2
        assert first.name == "invoke_agent claude-code" and first.agent_name == "claude-code"
        assert first.service_name == "claude-code" and first.span_count == 8
        assert first.input_tokens == 1200 + 900 and first.output_tokens == 310 + 420
        assert first.status == StatusCode.ERROR and first.error_count == 2
        assert second.span_count == 2 and second.model == "claude-haiku-4-5-20251001"
        spans = spans_of(first)
        ops = [(labels["operation"], labels["tool_name"]) for labels, _ in spans]
        assert ops == [
            ("invoke_agent", ""),
            ("chat", ""),
            ("", "Read"),
            ("execute_tool", "Read"),
            ("chat", ""),
            ("", "Edit"),
            ("execute_tool", "Edit"),
            ("chat", ""),
        ]
        root, chat = spans[0][1], spans[1][1]
        assert all(s.parent_span_id == root.span_id for _, s in spans[1:])
        detail = selectors.span_detail(span=chat)
        attrs = detail["attributes"]
        assert (
            attrs["cost_usd"] == "0.0213" and attrs["gen_ai.usage.cache_read.input_tokens"] == 18000
        )
        assert chat.input_tokens == 1200 and chat.end_ns - chat.start_ns == 4100 * 10**6
        # The prompt text, sent with OTEL_LOG_USER_PROMPTS=1, is redacted on the span path.
        prompt = selectors.span_detail(span=root)["input_messages"][0]["parts"][0]["content"]
        assert prompt.startswith("Fix the failing billing test, then mail [EMAIL:")
        assert "jane.doe" not in json.dumps(selectors.span_detail(span=root))
        decision = selectors.span_detail(span=spans[5][1])["attributes"]
        assert (decision["decision"], decision["source"]) == ("reject", "user_reject")
        rejected, error = spans[6][1], spans[7][1]
        assert rejected.status_code == StatusCode.ERROR
        assert rejected.status_message == "The user rejected this edit"
        assert error.status_code == StatusCode.ERROR and error.status_message == "Overloaded"
        assert selectors.span_detail(span=error)["attributes"]["status_code"] == "529"


def test_it_cuts_a_codex_conversation_by_prompts_over_grpc(grpc_address, acme, make_key):
    exporter = GrpcLogs(
        endpoint=grpc_address,
        insecure=True,
        headers=(("authorization", f"Bearer {make_key(acme, 'ingest')}"),),
    )
    send(exporter, fixture(CODEX))
    with tenant_scope(acme):
        traces = list(Trace.objects.filter(session_id=CODEX_SESSION).order_by("start_ns"))
        # The conversation's start, then one trace per prompt.
        assert [t.span_count for t in traces] == [1, 6, 2]
        assert traces[1].name == "invoke_agent codex" and traces[1].agent_name == "codex"
        assert traces[1].input_tokens == 5400 and traces[1].output_tokens == 380
        spans = spans_of(traces[1])
        names = [selectors.span_display_name(span=s) for _, s in spans]
        assert names == [
            "invoke_agent codex",
            "codex.api_request",
            "chat gpt-5",
            "tool_decision shell",
            "execute_tool shell",
            "codex.api_request",
        ]
        assert spans[2][0]["provider"] == "openai"
        failed = spans[5][1]
        assert failed.status_code == StatusCode.ERROR
        assert failed.status_message == "rate limit reached"
        tool = selectors.span_detail(span=spans[4][1])
        assert tool["tool_call_result"] == "3 passed in 0.41s"
        assert spans[4][1].tool_call_id == "call_1"


def post_logs(live_server, key, doc, **headers):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return httpx.post(
        f"{live_server.url}/v1/logs",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
    )


def test_it_stores_a_resent_batch_once_and_extends_a_trace_with_late_records(
    live_server, acme, make_key
):
    key = make_key(acme, "ingest")
    doc, start = fixture(CLAUDE_CODE), 1_800_000_000 * 10**9
    early = otlp_json(doc, start_ns=start, only=range(0, 5))
    for _ in range(2):  # http/json, the exporter's retry sending the same batch
        resp = post_logs(live_server, key, early)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {}
    with tenant_scope(acme):
        trace = Trace.objects.get(session_id=CLAUDE_SESSION)
        assert (trace.span_count, trace.input_tokens) == (5, 2100)
        assert Span.objects.count() == 5
        ended = trace.end_ns
    late = otlp_json(doc, start_ns=start, only=range(5, 8))
    assert post_logs(live_server, key, late).status_code == 200
    with tenant_scope(acme):
        trace.refresh_from_db()
        assert trace.span_count == 8 and trace.end_ns > ended and trace.error_count == 2
        assert Trace.objects.filter(session_id=CLAUDE_SESSION).count() == 1


def test_it_cuts_a_late_codex_record_into_the_trace_it_belongs_to(live_server, acme, make_key):
    key = make_key(acme, "ingest")
    doc, start = fixture(CODEX), 1_800_000_000 * 10**9
    everything_but_the_tool_result = [i for i in range(10) if i != 6]
    post_logs(live_server, key, otlp_json(doc, start_ns=start, only=everything_but_the_tool_result))
    post_logs(live_server, key, otlp_json(doc, start_ns=start, only=[6]))
    post_logs(live_server, key, otlp_json(doc, start_ns=start))  # all again
    with tenant_scope(acme):
        traces = list(Trace.objects.filter(session_id=CODEX_SESSION).order_by("start_ns"))
        assert [t.span_count for t in traces] == [1, 6, 2]
        assert Span.objects.count() == 9


def test_it_refuses_bad_records_one_by_one(live_server, acme, make_key):
    key = make_key(acme, "ingest")
    doc = otlp_json(fixture(CLAUDE_CODE), start_ns=1_800_000_000 * 10**9, only=[0, 1])
    records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    no_session = json.loads(json.dumps(records[1]))
    no_session["attributes"] = [a for a in no_session["attributes"] if a["key"] != "session.id"]
    no_time = json.loads(json.dumps(records[1]))
    del no_time["timeUnixNano"]
    no_time["attributes"] = [a for a in no_time["attributes"] if a["key"] != "event.timestamp"]
    huge_tokens = json.loads(json.dumps(records[1]))
    for a in huge_tokens["attributes"]:
        if a["key"] == "input_tokens":
            a["value"] = {"stringValue": "9" * 40}
        if a["key"] == "event.sequence":
            a["value"] = {"intValue": "99"}
    records += [
        {"timeUnixNano": "1", "body": {"stringValue": "GET /health 200"}},
        no_session,
        no_time,
        {"timeUnixNano": "1", "body": {"kvlistValue": {"values": []}}, "traceId": "zz"},
        huge_tokens,
    ]
    resp = post_logs(live_server, key, doc)
    assert resp.status_code == 200, resp.text
    partial = resp.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "5"
    message = partial["errorMessage"]
    assert "'GET /health 200': not an event of a coding agent" in message
    assert "session.id is required" in message and "time_unix_nano" in message
    with tenant_scope(acme):
        assert Span.objects.count() == 2


@pytest.mark.parametrize(
    "body, status",
    [
        (b"[1, 2]", 400),
        (b'{"resourceLogs": {"scopeLogs": 1}}', 400),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": "x"}]}]}', 400),
        (b"\x00\xff not protobuf", 400),
    ],
)
def test_it_refuses_a_malformed_body_with_400(live_server, acme, make_key, body, status):
    key = make_key(acme, "ingest")
    kind = "application/x-protobuf" if body.startswith(b"\x00") else "application/json"
    resp = post_logs(live_server, key, body, **{"Content-Type": kind})
    assert resp.status_code == status


def test_it_refuses_hostile_bodies_cleanly(live_server, acme, make_key, settings):
    key = make_key(acme, "ingest")
    deep = b'{"kvlistValue":{"values":[{"key":"a","value":' * 300
    deep = (
        b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1","body":'
        + deep
        + b'{"stringValue":"x"}'
        + b"}]}}" * 300
        + b"}]}]}]}"
    )
    resp = post_logs(live_server, key, deep)
    assert resp.status_code == 400, resp.text
    assert "too deeply" in resp.json()["detail"] or "depth" in resp.json()["detail"]

    bomb = gzip.compress(
        b'{"resourceLogs": [' + b" " * (settings.INGEST_MAX_BODY_BYTES + 10) + b"]}"
    )
    resp = post_logs(live_server, key, bomb, **{"Content-Encoding": "gzip"})
    assert resp.status_code == 413 and "inflates" in resp.json()["detail"]
    resp = httpx.post(
        f"{live_server.url}/v1/logs",
        content=b"x" * 10,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"},
    )
    assert resp.status_code == 415


def test_it_answers_protobuf_in_protobuf_and_checks_the_key(live_server, acme, make_key):
    resp = httpx.post(
        f"{live_server.url}/v1/logs",
        content=b"",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert resp.status_code == 401
    weak = make_key(acme, "read")
    assert post_logs(live_server, weak, {}).status_code == 403
    resp = httpx.post(
        f"{live_server.url}/v1/logs",
        content=b"",
        headers={
            "Authorization": f"Bearer {make_key(acme, 'ingest')}",
            "Content-Type": "application/x-protobuf",
        },
    )
    assert resp.status_code == 200
    assert (
        ExportLogsServiceResponse.FromString(resp.content).partial_success.rejected_log_records == 0
    )


def test_another_tenant_sees_nothing(live_server, acme, globex, make_key, api):
    send(http_logs(live_server, make_key(globex, "ingest")), fixture(CLAUDE_CODE))
    with tenant_scope(acme):
        assert not Trace.objects.exists()
    with tenant_scope(globex):
        assert Trace.objects.filter(session_id=CLAUDE_SESSION).count() == 2
    reader = make_key(acme, "read")
    assert api.get(f"/api/v1/sessions/{CLAUDE_SESSION}", key=reader).status_code == 404
    body = api.get("/api/v1/sessions", key=reader).json()
    assert CLAUDE_SESSION not in json.dumps(body)


def test_it_joins_the_agents_own_spans_instead_of_doubling_them(live_server, acme, make_key):
    """With its beta traces on, a record sent inside one of the agent's spans carries that
    span's context: its span joins that trace under that span, and the call is costed
    once (the agent's span carries no gen_ai.usage)."""
    key = make_key(acme, "ingest")
    trace_hex, interaction, llm_request = uuid.uuid4().hex, "1111111111111111", "2222222222222222"
    spans = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_hex,
                                "spanId": interaction,
                                "name": "claude_code.interaction",
                                "startTimeUnixNano": str(1_800_000_000 * 10**9),
                                "endTimeUnixNano": str(1_800_000_013 * 10**9),
                            },
                            {
                                "traceId": trace_hex,
                                "spanId": llm_request,
                                "parentSpanId": interaction,
                                "name": "claude_code.llm_request",
                                "startTimeUnixNano": str(1_800_000_000 * 10**9 + 100),
                                "endTimeUnixNano": str(1_800_000_004 * 10**9 + 200 * 10**6),
                                "attributes": [
                                    {"key": "model", "value": {"stringValue": "claude-sonnet-4-5"}},
                                    {"key": "input_tokens", "value": {"intValue": "1200"}},
                                ],
                            },
                        ]
                    }
                ],
            }
        ]
    }
    resp = httpx.post(
        f"{live_server.url}/v1/traces",
        json=spans,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status_code == 200, resp.text
    doc = otlp_json(fixture(CLAUDE_CODE), start_ns=1_800_000_000 * 10**9, only=[0, 1])
    prompt, call = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    prompt.update(traceId=trace_hex, spanId=interaction)
    call.update(traceId=trace_hex, spanId=llm_request)
    assert post_logs(live_server, key, doc).status_code == 200
    with tenant_scope(acme):
        assert Trace.objects.count() == 1
        trace = Trace.objects.get()
        assert trace.span_count == 4 and trace.input_tokens == 1200
        chat = Span.objects.get(trace_id=trace.trace_id, input_tokens__isnull=False)
        assert chat.parent_span_id == int(llm_request, 16)
