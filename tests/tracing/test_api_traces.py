"""The trace read API: search filters, the span tree, span payloads, tenancy."""

import os

import pytest

from controlplane.tenancy import tenant_scope
from tests.tracing.searchdata import (
    BASE_NS,
    conversation_trace,
    in_process_provider,
    index_queue,
)
from tracing.models import SearchBlock, Trace
from tracing.tasks import index_spans

S = 1_000_000_000  # ns in a second


@pytest.fixture
def corpus(acme, globex, settings, django_capture_on_commit_callbacks):
    """Four acme traces and one of globex, sent through the SDK and indexed."""
    with index_queue(settings) as drain:
        with django_capture_on_commit_callbacks(execute=True):
            support = in_process_provider(acme, "support-agent")
            billing = in_process_provider(acme, "billing-agent")
            ids = {
                "order": conversation_trace(support, start_ns=BASE_NS, duration_ms=1500),
                "refund": conversation_trace(
                    billing,
                    agent="billing",
                    model="gpt-5",
                    session="conv-2",
                    user="I want a refund for invoice 42",
                    tool_result="Refund declined: unpaid",
                    error=True,
                    start_ns=BASE_NS + 60 * S,
                    duration_ms=9000,
                    attrs={"customer.tier": "gold"},
                ),
                "followup": conversation_trace(
                    support,
                    user="And when will it arrive?",
                    answer="Tomorrow morning.",
                    start_ns=BASE_NS + 120 * S,
                    duration_ms=300,
                    attrs={"customer.tier": "free"},
                ),
                "old": conversation_trace(
                    support, session="conv-0", user="Hello there", start_ns=BASE_NS - 86400 * S
                ),
            }
            ids["globex"] = conversation_trace(
                in_process_provider(globex, "support-agent"),
                user="globex refund secret",
                start_ns=BASE_NS + 30 * S,
            )
        assert drain() >= 5  # the in-process exporter sends span by span
    return ids


def get(client, key, path, **params):
    return client.get(path, params, HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def reader(acme, make_key):
    return make_key(acme, "read")


def cursor(*parts: str) -> str:
    """A cursor as the API encodes one, carrying what we choose."""
    from tracing.query.filters import encode_cursor

    return encode_cursor(*parts)


def listed(client, key, **params) -> list[str]:
    resp = get(client, key, "/api/v1/traces", **params)
    assert resp.status_code == 200, resp.content
    return [t["trace_id"] for t in resp.json()["items"]]


def test_it_lists_the_tenants_traces_newest_first(client, corpus, reader):
    resp = get(client, reader, "/api/v1/traces")
    body = resp.json()
    assert [t["trace_id"] for t in body["items"]] == [
        corpus["followup"],
        corpus["refund"],
        corpus["order"],
        corpus["old"],
    ]
    assert body["next_cursor"] is None
    refund = body["items"][1]
    assert refund["status"] == "error" and refund["error_count"] == 2
    assert refund["service_name"] == "billing-agent" and refund["agent_name"] == "billing"
    assert refund["model"] == "gpt-5-20250514" and refund["session_id"] == "conv-2"
    assert refund["duration_ms"] == 9000 and refund["span_count"] == 4
    assert refund["input_tokens"] == 200 and refund["output_tokens"] == 40
    assert refund["name"] == "invoke_agent billing"
    assert refund["start_time"].startswith("2025-10-09T08:54:20")


# Every filter, alone and combined; one corpus for all (building it is the slow part).
FILTER_CASES = [
    ({"service": "billing-agent"}, ["refund"]),
    ({"agent": "support"}, ["followup", "order", "old"]),
    ({"status": "error"}, ["refund"]),
    ({"status": "ok"}, ["followup", "order", "old"]),
    ({"model": "gpt-5"}, ["refund"]),  # a span's request model
    ({"model": "claude-sonnet-4-20250514"}, ["followup", "order", "old"]),
    ({"min_duration_ms": "1500"}, ["refund", "order", "old"]),
    ({"session_id": "conv-1"}, ["followup", "order"]),
    ({"since": "2025-10-09T08:53:00Z"}, ["followup", "refund", "order"]),
    ({"since": "2025-10-09T08:53:00Z", "until": "2025-10-09T08:54:00Z"}, ["order"]),
    ({"attr": "customer.tier=gold"}, ["refund"]),
    ({"attr": "gen_ai.tool.name=lookup_order"}, ["followup", "refund", "order", "old"]),
    ({"attr": "service.name=billing-agent"}, ["refund"]),  # a resource attribute
    ({"attr": ["customer.tier=free", "gen_ai.agent.name=support"]}, ["followup"]),
    ({"q": "refund"}, ["refund"]),  # not globex's trace that says refund too
    ({"q": "unpaid"}, ["refund"]),  # a tool result
    ({"q": "arrive"}, ["followup"]),  # a user message
    ({"q": "tomorrow"}, ["followup"]),  # an assistant answer, case-insensitive
    ({"q": "ship"}, ["followup", "refund", "order", "old"]),  # prefix: "shipped"
    ({"q": "timed out"}, ["refund"]),  # an error message
    ({"q": "EMAIL"}, ["order"]),  # redaction markers are searchable
    ({"q": "nothing matches this"}, []),
    ({"q": "refund", "status": "ok"}, []),
]


def test_it_filters_traces_by_every_filter(client, corpus, reader):
    wrong = []
    for params, expected in FILTER_CASES:
        got = listed(client, reader, **params)
        want = [corpus[name] for name in expected]
        if got != want:
            names = {v: k for k, v in corpus.items()}
            wrong.append(f"{params}: got {[names.get(g, g) for g in got]}, want {expected}")
    assert not wrong, "\n".join(wrong)


def test_it_pages_with_a_cursor(client, corpus, reader):
    first = get(client, reader, "/api/v1/traces", limit=3).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    second = get(client, reader, "/api/v1/traces", limit=3, cursor=first["next_cursor"]).json()
    assert [t["trace_id"] for t in second["items"]] == [corpus["old"]]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "broken"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-45"}, "until"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"min_duration_ms": "slow"}, "min_duration_ms"),
        ({"min_duration_ms": "-5"}, "min_duration_ms"),
        ({"attr": "no-equals-sign"}, "attr"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"servce": "typo"}, "servce"),
        ({"service": "a", "status": "error", "sesion_id": "x"}, "sesion_id"),
        # Each of these answered 500.
        ({"limit": "²"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"since": "99999999999d"}, "since"),
        ({"until": "9999-12-31T23:59:59-23:59"}, "until"),
        ({"cursor": cursor("2025-13-45T00:00:00+00:00", "1")}, "cursor"),
        ({"cursor": cursor("2025-01-01T00:00:00+00:00", "²")}, "cursor"),
        ({"cursor": cursor("2025-01-01T00:00:00+00:00", "9" * 30)}, "cursor"),
        ({"service": "a\x00b"}, "service"),
        ({"q": "\x00"}, "q"),
        ({"attr": "k=\x00"}, "attr"),
    ],
)
def test_it_answers_400_naming_the_bad_filter(client, acme, reader, params, named):
    resp = get(client, reader, "/api/v1/traces", **params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "invalid" and list(body["detail"]) == [named]
    assert body["detail"][named][0]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "²"},
        {"cursor": cursor("2025-13-45T00:00:00+00:00", "conv-1")},
        {"cursor": cursor("2025-01-01T00:00:00+00:00", "é\x00")},
        {"cursor": cursor("not a time", "conv-1")},
    ],
)
def test_it_answers_400_naming_a_bad_session_page(client, acme, reader, params):
    resp = get(client, reader, "/api/v1/sessions", **params)
    assert resp.status_code == 400, resp.content
    assert list(resp.json()["detail"]) == list(params)


def test_it_returns_a_traces_span_tree(client, corpus, reader):
    resp = get(client, reader, f"/api/v1/traces/{corpus['refund']}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["trace"]["trace_id"] == corpus["refund"]
    (root,) = body["spans"]
    assert root["name"] == "invoke_agent billing" and root["parent_span_id"] is None
    assert root["status"] == "error" and root["start_offset_ms"] == 0
    assert [c["name"] for c in root["children"]] == [
        "chat gpt-5",
        "execute_tool lookup_order",
        "chat gpt-5",
    ]
    chat, tool, _ = root["children"]
    assert chat["parent_span_id"] == root["span_id"] and chat["children"] == []
    assert chat["request_model"] == "gpt-5" and chat["input_tokens"] == 100
    assert tool["status"] == "error" and tool["status_message"] == "lookup_order timed out"
    assert tool["tool_name"] == "lookup_order" and tool["duration_ms"] == 2250
    assert "input_messages" not in chat  # payloads are fetched per span
    # Dashed UUIDs work too.
    dashed = f"{corpus['refund'][:8]}-{corpus['refund'][8:12]}-{corpus['refund'][12:16]}-{corpus['refund'][16:20]}-{corpus['refund'][20:]}"
    assert get(client, reader, f"/api/v1/traces/{dashed}").status_code == 200


def test_it_returns_a_spans_payloads_reassembled(client, corpus, reader):
    tree = get(client, reader, f"/api/v1/traces/{corpus['order']}").json()
    last_chat = tree["spans"][0]["children"][2]
    resp = get(client, reader, f"/api/v1/spans/{last_chat['span_id']}", trace_id=corpus["order"])
    assert resp.status_code == 200
    span = resp.json()
    assert span["trace_id"] == corpus["order"] and span["name"] == "chat claude-sonnet-4"
    roles = [m["role"] for m in span["input_messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert span["input_messages"][0]["parts"][0]["content"].startswith(
        "Where is my order? My e-mail is [EMAIL:"
    )
    assert span["input_messages"][1]["parts"][0] == {
        "type": "tool_call",
        "id": "call_1",
        "name": "lookup_order",
        "arguments": {"order": 1000},
    }
    assert span["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "It has shipped."}]}
    ]
    assert span["system_instructions"] == [
        {"type": "text", "content": "You are a helpful support agent."}
    ]
    assert span["redactions"] == {"EMAIL": 1}
    assert span["attributes"]["gen_ai.request.model"] == "claude-sonnet-4"
    assert span["resource"]["service.name"] == "support-agent"
    tool = tree["spans"][0]["children"][1]
    body = get(client, reader, f"/api/v1/spans/{tool['span_id']}").json()
    assert body["tool_call_arguments"] == '{"order": 1000}'
    assert body["tool_call_result"] == "Order 1000 shipped to 221B Baker Street"


def test_it_answers_404_for_another_tenants_objects(client, corpus, reader, globex, make_key):
    stranger = make_key(globex, "read")
    assert listed(client, stranger) == [corpus["globex"]]
    assert listed(client, stranger, q="refund") == [corpus["globex"]]
    assert listed(client, stranger, attr="customer.tier=gold") == []
    resp = get(client, stranger, f"/api/v1/traces/{corpus['order']}")
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    acme_span = get(client, reader, f"/api/v1/traces/{corpus['order']}").json()["spans"][0]
    for path in (f"/api/v1/spans/{acme_span['span_id']}", "/api/v1/sessions/conv-2"):
        resp = get(client, stranger, path)
        assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    resp = get(client, stranger, f"/api/v1/spans/{acme_span['span_id']}", trace_id=corpus["order"])
    assert resp.status_code == 404
    sessions = get(client, stranger, "/api/v1/sessions").json()["items"]
    assert [s["session_id"] for s in sessions] == ["conv-1"] and sessions[0]["trace_count"] == 1


def test_it_answers_404_and_400_for_unknown_and_malformed_ids(client, corpus, reader):
    assert get(client, reader, f"/api/v1/traces/{'0' * 31}1").status_code == 404
    resp = get(client, reader, "/api/v1/traces/not-a-trace")
    assert resp.status_code == 400 and list(resp.json()["detail"]) == ["trace_id"]
    resp = get(client, reader, "/api/v1/spans/xyz")
    assert resp.status_code == 400 and list(resp.json()["detail"]) == ["span_id"]
    assert get(client, reader, f"/api/v1/spans/{'ab' * 8}").status_code == 404
    resp = get(client, reader, f"/api/v1/spans/{'ab' * 8}", trace="x")
    assert resp.status_code == 400 and list(resp.json()["detail"]) == ["trace"]
    assert get(client, reader, "/api/v1/sessions/no-such-session").status_code == 404
    assert get(client, reader, "/api/v1/sessions/a%00b").status_code == 404


def test_it_needs_a_key_with_the_read_scope(client, corpus, acme, make_key):
    assert client.get("/api/v1/traces").status_code == 401
    ingest_only = make_key(acme, "ingest")
    resp = get(client, ingest_only, "/api/v1/traces")
    assert resp.status_code == 403 and "read" in resp.json()["detail"]


def test_it_lets_a_logged_in_viewer_read(client, corpus, acme_viewer):
    client.force_login(acme_viewer)
    resp = client.get("/api/v1/traces", {"status": "error"})
    assert resp.status_code == 200 and len(resp.json()["items"]) == 1


def test_it_groups_traces_by_session_in_order(client, corpus, reader):
    body = get(client, reader, "/api/v1/sessions").json()
    assert [s["session_id"] for s in body["items"]] == ["conv-1", "conv-2", "conv-0"]
    conv1 = body["items"][0]
    assert conv1["trace_count"] == 2 and conv1["error_count"] == 0
    assert conv1["input_tokens"] == 400 and conv1["agent_name"] == "support"
    page = get(client, reader, "/api/v1/sessions", limit=2).json()
    assert len(page["items"]) == 2
    rest = get(client, reader, "/api/v1/sessions", cursor=page["next_cursor"]).json()
    assert [s["session_id"] for s in rest["items"]] == ["conv-0"] and rest["next_cursor"] is None
    detail = get(client, reader, "/api/v1/sessions/conv-1").json()
    assert detail["session"]["trace_count"] == 2
    assert [t["trace_id"] for t in detail["traces"]] == [corpus["order"], corpus["followup"]]
    resp = get(client, reader, "/api/v1/sessions", status="error")
    assert resp.status_code == 400 and list(resp.json()["detail"]) == ["status"]


def _postings(tenant) -> dict[bytes, list[int]]:
    """Every term of the tenant's index with the row ids it lists, as stored."""
    from tracing.search.segments import _Block

    postings: dict[bytes, list[int]] = {}
    for block in SearchBlock.all_tenants.filter(tenant=tenant).order_by("segment", "first_term"):
        for term, ids in _Block(bytes(block.data)).entries():
            postings.setdefault(term, []).extend(ids)
    return postings


@pytest.mark.postgres  # SQLite's documents: tests/tracing/test_search_terms.py
def test_it_posts_each_traces_terms_and_can_run_twice(corpus, acme):
    from tracing.models import attribute_pair
    from tracing.search.attributes import attribute_term
    from tracing.search.segments import segments_merge

    with tenant_scope(acme):
        rows = dict(Trace.objects.values_list("id", "trace_id"))
        spans = [(corpus["order"], s) for s in _span_ids(corpus["order"])]
    segments_merge(tenant_id=acme.id, everything=True)
    before = _postings(acme)
    # The system prompt every trace sends is in each of them; the refund's reply in one.
    assert sorted(before[b"you"]) == sorted(rows)
    assert [rows[r].hex for r in before[b"declined"]] == [corpus["refund"]]
    gold = attribute_term(attribute_pair("customer.tier", "gold")).encode()
    assert [rows[r].hex for r in before[gold]] == [corpus["refund"]]
    index_spans(tenant_id=acme.id, spans=spans)
    index_spans(tenant_id=acme.id, spans=spans)
    segments_merge(tenant_id=acme.id, everything=True)
    assert _postings(acme) == before  # one posting a term and trace, not three


@pytest.mark.postgres
def test_it_keeps_each_term_once_a_segment_compressed(corpus, acme):
    from tracing.search.segments import _Block, segments_merge

    segments_merge(tenant_id=acme.id, everything=True)
    blocks = list(SearchBlock.all_tenants.filter(tenant=acme).order_by("first_term"))
    assert len({b.segment for b in blocks}) == 1
    terms = []
    for block in blocks:
        assert bytes(block.data)[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
        held = _Block(bytes(block.data)).terms
        assert (held[0], held[-1]) == (bytes(block.first_term), bytes(block.last_term))
        terms += held
    assert terms == sorted(set(terms)) and b"you" in terms


def _span_ids(trace_hex):
    import uuid

    from tracing.models import Span
    from tracing.query.filters import span_hex

    return [
        span_hex(s)
        for s in Span.objects.filter(trace_id=uuid.UUID(trace_hex)).values_list(
            "span_id", flat=True
        )
    ]


def test_it_documents_the_read_api_in_openapi(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for path in (
        "/api/v1/traces",
        "/api/v1/traces/{trace_id}",
        "/api/v1/spans/{span_id}",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
    ):
        assert "get" in schema["paths"][path], path
    names = {p["name"] for p in schema["paths"]["/api/v1/traces"]["get"]["parameters"]}
    assert names >= {
        "q",
        "since",
        "until",
        "service",
        "agent",
        "status",
        "model",
        "min_duration_ms",
        "session_id",
        "attr",
        "cursor",
        "limit",
    }
    summary = schema["components"]["schemas"]["TraceSummary"]["properties"]
    assert {"trace_id", "status", "duration_ms", "model", "input_tokens"} <= set(summary)


@pytest.mark.django_db(transaction=True)
def test_it_finds_spans_sent_over_otlp_http(api, live_server, acme, make_key, settings):
    """End to end over HTTP: the SDK's OTLP exporter in, the search API out."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from tests.tracing.otlp import provider_for

    with index_queue(settings) as drain:
        exporter = OTLPSpanExporter(
            endpoint=f"{live_server.url}/v1/traces",
            headers={"Authorization": f"Bearer {make_key(acme, 'ingest')}"},
        )
        provider = provider_for(exporter, service="http-agent")
        trace_id = conversation_trace(provider, user="Cancel subscription 7781 please")
        provider.shutdown()
        assert drain() == 4  # one task per exported span (SimpleSpanProcessor)
    key = make_key(acme, "read")
    resp = api.get("/api/v1/traces", key=key, params={"q": "subscription 7781"})
    assert resp.status_code == 200
    assert [t["trace_id"] for t in resp.json()["items"]] == [trace_id]
    resp = api.get("/api/v1/traces", key=key, params={"service": "http-agent", "status": "ok"})
    assert [t["trace_id"] for t in resp.json()["items"]] == [trace_id]
    resp = api.get(f"/api/v1/traces/{trace_id}", key=key)
    assert resp.json()["trace"]["span_count"] == 4


def test_it_indexes_after_ingest_not_during_it(
    client, acme, reader, settings, django_capture_on_commit_callbacks
):
    with index_queue(settings) as drain:
        with django_capture_on_commit_callbacks(execute=True):
            trace_id = conversation_trace(in_process_provider(acme), user="Paint it teal")
        # Stored and listed at once; not yet searchable by text or attribute.
        assert listed(client, reader) == [trace_id]
        assert listed(client, reader, q="teal") == []
        assert listed(client, reader, attr="gen_ai.agent.name=support") == []
        assert drain() == 4  # queued for the worker, one task per exported batch
    assert listed(client, reader, q="teal") == [trace_id]
    assert listed(client, reader, attr="gen_ai.agent.name=support") == [trace_id]


def test_it_rebuilds_the_index_from_stored_spans(client, acme, reader):
    from django.core.management import call_command

    # On-commit hooks do not run inside this test's transaction, so no indexing task is
    # queued: as if the broker had been down when the spans arrived.
    trace_id = conversation_trace(in_process_provider(acme), user="Lost in the broker")
    assert listed(client, reader, q="broker") == []
    assert listed(client, reader, attr="gen_ai.agent.name=support") == []
    call_command("index_traces", "--tenant", "acme", stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert listed(client, reader, q="broker") == [trace_id]
    assert listed(client, reader, attr="gen_ai.agent.name=support") == [trace_id]
