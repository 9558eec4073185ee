"""The playground through the REST API: recorded calls of a managed run and of external
agents (the real OpenLLMetry and OpenInference instrumentations, GenAI semconv events)
opened as editable requests and run again with the real `anthropic` SDK against the
local Messages API server, through the gateway's rate limit and budget hook."""

import uuid

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from billing.budgets import windows_for
from billing.models import Budget, LedgerEntry, SpanCost
from billing.store import get_store
from controlplane import tenantcache
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services as execution_services
from execution.models import Run
from replay.models import PlaygroundRun
from tests.billing.conftest import price_book  # noqa: F401 - the seed prices
from tests.billing.helpers import cost_queue, gateway_for
from tests.execution.bundles import agent_with_bundle
from tests.tracing.instrumented import conversation
from tests.tracing.otlp import provider_for
from tracing import selectors as tracing_selectors
from tracing.ingest.pipeline import spans_ingest
from tracing.models import Span

MODEL = "claude-sonnet-5"
MANIFEST = f'entrypoint = "agent:main"\nmodel = "{MODEL}"\n'
NOOP = "def main(ctx, input):\n    return None\n"
TOOLS = [
    {"name": "lookup_order", "description": "Find an order", "input_schema": {"type": "object"}}
]


@pytest.fixture(autouse=True)
def _fast_playground(settings):
    # The limit's own test lowers it; the rest must not meet it.
    settings.PLAYGROUND_LLM_PER_MINUTE = 6000


def auth(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def chat_spans(tenant, trace_id: str) -> list[Span]:
    with tenant_scope(tenant):
        spans = Span.objects.filter(trace_id=uuid.UUID(hex=trace_id)).order_by("start_ns")
        return [s for s in spans if tracing_selectors.span_labels(span=s)["operation"] == "chat"]


def hexes(span) -> tuple[str, str]:
    return span.trace_id.hex, (span.span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()


@pytest.fixture
def managed_call(acme, tmp_path):
    """A chat span of a managed run, made by its real gateway: (trace id, span id)."""
    agent = agent_with_bundle(acme, code=NOOP, manifest=MANIFEST)
    with tenant_scope(acme):
        run = execution_services.run_create(
            tenant=acme, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        run = Run.objects.select_related("agent", "version").get(pk=run.pk)
        gateway = gateway_for(run, tmp_path)
        reply = gateway.handle(
            "llm.messages",
            {
                "system": "You are a support agent.",
                "messages": [{"role": "user", "content": "Where is order A-17?"}],
                "max_tokens": 300,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "tools": TOOLS,
            },
        )
        assert reply["ok"], reply
        gateway.budget.flush()
        gateway.tracer.finish(status="succeeded")
    (span,) = chat_spans(acme, gateway.tracer.trace_id)
    return hexes(span)


def external_call(tenant, name: str, traced) -> tuple[str, str]:
    """The second chat span of a conversation traced by a real instrumentation (after a
    tool call), stored through the span path from its OTLP encoding."""
    exporter = InMemorySpanExporter()
    provider, client = traced(name, exporter)
    trace_id = conversation(provider, client, session=f"pg-{name}", user="user-1")
    spans_ingest(tenant_id=tenant.id, request=encode_spans(exporter.get_finished_spans()))
    chats = chat_spans(tenant, f"{trace_id:032x}")
    assert len(chats) == 2
    return hexes(chats[1])


def events_call(tenant) -> tuple[str, str]:
    """An older GenAI instrumentation's call: messages as span events."""
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter, service="events-agent").get_tracer("old-genai")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.max_tokens": 128,
        "gen_ai.request.temperature": 0.5,
    }
    with tracer.start_as_current_span("chat", attributes=attrs) as span:
        span.add_event("gen_ai.system.message", {"content": "Answer in French."})
        span.add_event("gen_ai.user.message", {"content": "Good morning"})
        span.add_event("gen_ai.choice", {"message": '{"role": "assistant", "content": "Bonjour"}'})
    spans_ingest(tenant_id=tenant.id, request=encode_spans(exporter.get_finished_spans()))
    (chat,) = chat_spans(tenant, f"{span.get_span_context().trace_id:032x}")
    return hexes(chat)


def editable(client, key, source) -> dict:
    response = client.get(f"/api/v1/playground/{source[1]}?trace_id={source[0]}", **auth(key))
    assert response.status_code == 200, response.content
    return response.json()


def run(client, key, source, **fields):
    body = {"source": {"trace_id": source[0], "span_id": source[1]}, **fields}
    return client.post("/api/v1/playground", body, content_type="application/json", **auth(key))


def request_of(found: dict) -> dict:
    keys = ("model", "system", "messages", "max_tokens", "temperature", "top_p", "top_k",
            "stop_sequences", "tools")  # fmt: skip
    return {k: found[k] for k in keys}


def test_it_opens_a_managed_runs_call_as_sent(client, acme, make_key, managed_call):
    found = editable(client, make_key(acme, "read"), managed_call)
    assert found["source"]["trace_id"] == managed_call[0]
    assert found["source"]["run_id"] and found["source"]["model"] == MODEL
    assert found["model"] == MODEL
    assert found["system"] == "You are a support agent."
    assert found["messages"] == [{"role": "user", "content": "Where is order A-17?"}]
    assert (found["max_tokens"], found["temperature"], found["top_p"]) == (300, 0.2, 0.9)
    assert found["stop_sequences"] == ["END"]
    assert found["tools"] == TOOLS
    assert found["recorded_output"][0]["role"] == "assistant"
    assert MODEL in found["models"] and found["runs"] == [] and found["notes"] == []


def test_it_runs_an_edited_call_as_a_new_trace_linked_to_the_source(
    client, acme, make_key, managed_call, settings, django_capture_on_commit_callbacks
):
    key = make_key(acme, "read", "write")
    found = editable(client, key, managed_call)
    fields = request_of(found)
    fields["system"] = "You are a terse support agent."
    fields["messages"][0]["content"] = "Where is order B-2?"
    with tenant_scope(acme):
        Budget.objects.create(tenant=acme, scope="tenant", period="day", cap_nusd=10**12)
    tenantcache.reset()  # the source's call cached "no budgets"
    with cost_queue(settings) as drain:
        with django_capture_on_commit_callbacks(execute=True):
            response = run(client, key, managed_call, **fields)
        assert response.status_code == 201, response.content
        assert drain() == 1
    result = response.json()
    assert result["text"] == "You said: Where is order B-2?"
    assert result["status"] == "ok" and result["stop_reason"] == "end_turn"
    assert result["source"] == {"trace_id": managed_call[0], "span_id": managed_call[1]}
    assert result["input_tokens"] > 0 and result["output_tokens"] > 0
    assert result["cost_usd"] not in (None, "0")

    (chat,) = chat_spans(acme, result["trace_id"])
    with tenant_scope(acme):
        detail = tracing_selectors.span_detail(span=chat)
        labels = tracing_selectors.span_labels(span=chat)
        spans = Span.objects.filter(trace_id=chat.trace_id).count()
        costed = SpanCost.objects.get(trace_id=chat.trace_id, span_id=chat.span_id)
        settled = LedgerEntry.objects.get(entry="settle", run=None)
        window = windows_for(tenant_id=acme.id, agent="playground", run_id=None)
        (spent, reserved), *_ = get_store().state(window)
    assert spans == 2  # the root and the chat span
    assert labels["agent_name"] == "playground" and labels["request_model"] == MODEL
    assert detail["attributes"]["flightdeck.playground.source_span"] == managed_call[1]
    assert detail["attributes"]["flightdeck.playground.source_trace"] == managed_call[0]
    assert [(link["trace_id"], link["span_id"]) for link in detail["links"]] == [managed_call]
    assert detail["system_instructions"] == [
        {"type": "text", "content": "You are a terse support agent."}
    ]
    assert detail["output_messages"][0]["parts"][0]["content"] == result["text"]
    # Costed like any span; charged to the budget once, by the settlement, not on ingest.
    assert costed.cost_nusd == settled.amount_nusd > 0
    assert (spent, reserved) == (settled.amount_nusd, 0)

    runs = editable(client, key, managed_call)["runs"]
    assert [r["trace_id"] for r in runs] == [result["trace_id"]]


@pytest.mark.parametrize("name", ["openllmetry", "openinference"])
def test_it_opens_and_runs_an_external_agents_call(client, acme, make_key, traced, name):
    key = make_key(acme, "read", "write")
    source = external_call(acme, name, traced)
    found = editable(client, key, source)
    assert found["source"]["service"] == f"{name}-agent" and found["source"]["run_id"] == ""
    assert found["system"] == "Be brief."
    assert found["max_tokens"] == 200
    assert [t["name"] for t in found["tools"]] == ["lookup_order"]
    roles = [m["role"] for m in found["messages"]]
    assert roles == ["user", "assistant", "user"]
    tool_use = [b for b in found["messages"][1]["content"] if b["type"] == "tool_use"]
    tool_result = found["messages"][2]["content"][0]
    assert tool_use[0]["name"] == "lookup_order" and tool_use[0]["input"] == {"order": "A-17"}
    assert tool_result["type"] == "tool_result" and tool_result["content"] == "shipped"
    assert tool_result["tool_use_id"] == tool_use[0]["id"]
    # claude-test has no price: the playground says so and fills in one it can call.
    assert found["source"]["model"] == "claude-test" and found["model"] != "claude-test"
    assert any("claude-test" in note for note in found["notes"])

    response = run(client, key, source, **request_of(found))
    assert response.status_code == 201, response.content
    assert response.json()["text"] == "The tool returned: shipped"


def test_it_opens_a_call_recorded_as_semconv_events(client, acme, make_key):
    key = make_key(acme, "read", "write")
    source = events_call(acme)
    found = editable(client, key, source)
    assert found["system"] == "Answer in French."
    assert found["messages"] == [{"role": "user", "content": "Good morning"}]
    assert (found["max_tokens"], found["temperature"]) == (128, 0.5)
    response = run(client, key, source, **{**request_of(found), "system": "Answer in German."})
    assert response.status_code == 201 and response.json()["text"] == "You said: Good morning"


def test_it_says_what_was_redacted(client, acme, make_key):
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter).get_tracer("t")
    secret = "sk-ant-api03-" + "A1b2" * 20
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": MODEL,
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": '
        f'"my key is {secret}"}}]}}]',
    }
    with tracer.start_as_current_span("chat", attributes=attrs) as span:
        trace_id = span.get_span_context().trace_id
    spans_ingest(tenant_id=acme.id, request=encode_spans(exporter.get_finished_spans()))
    (chat,) = chat_spans(acme, f"{trace_id:032x}")
    found = editable(client, make_key(acme, "read"), hexes(chat))
    assert secret not in str(found["messages"]) and found["redactions"]


def test_it_refuses_past_the_rate_limit(client, acme, make_key, managed_call, settings):
    settings.PLAYGROUND_LLM_PER_MINUTE = 1  # a burst of one
    key = make_key(acme, "read", "write")
    fields = request_of(editable(client, key, managed_call))
    assert run(client, key, managed_call, **fields).status_code == 201
    refused = run(client, key, managed_call, **fields)
    assert refused.status_code == 429
    assert "rate limit of 1 calls a minute" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0
    with tenant_scope(acme):
        assert PlaygroundRun.objects.count() == 1


def test_it_refuses_a_call_a_budget_cannot_hold(client, acme, make_key, managed_call):
    key = make_key(acme, "read", "write")
    fields = request_of(editable(client, key, managed_call))
    with tenant_scope(acme):
        budget = Budget.objects.create(tenant=acme, scope="agent", agent="playground", cap_nusd=10)
    tenantcache.reset()  # the source's call cached "no budgets"
    refused = run(client, key, managed_call, **fields)
    assert refused.status_code == 402
    assert refused.json()["error"] == "budget_exceeded"
    assert f"budget {budget.pk} (agent 'playground'" in refused.json()["detail"]
    with tenant_scope(acme):
        assert PlaygroundRun.objects.count() == 0


def test_it_records_an_upstream_failure(client, acme, make_key, managed_call, messages_api):
    key = make_key(acme, "read", "write")
    fields = request_of(editable(client, key, managed_call))
    messages_api.failures = [{"status": 400, "count": 1}]
    failed = run(client, key, managed_call, **fields)
    assert failed.status_code == 502 and "answered 400" in failed.json()["detail"]
    with tenant_scope(acme):
        row = PlaygroundRun.objects.get()
    assert row.status == "error" and row.trace_id in failed.json()["detail"]
    (chat,) = chat_spans(acme, row.trace_id)
    assert chat.status_code == 2


def test_it_hides_another_tenants_span(client, acme, globex, make_key, traced):
    source = external_call(globex, "openllmetry", traced)
    key = make_key(acme, "read", "write")
    got = client.get(f"/api/v1/playground/{source[1]}?trace_id={source[0]}", **auth(key))
    assert got.status_code == 404
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert run(client, key, source, **body).status_code == 404
    with tenant_scope(globex):
        assert PlaygroundRun.objects.count() == 0


def test_it_lets_only_writers_run(client, acme, make_key, managed_call):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert run(client, make_key(acme, "read"), managed_call, **body).status_code == 403


GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": "gpt-nonesuch"}, "model"),
        ({"model": ""}, "model"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"seed": 4}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x", "name": "y"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 1_100_000}]}, "messages"),
        ({"system": ["not", "text"]}, "system"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"tools": [{"name": "bad name!", "input_schema": {}}]}, "tools"),
        ({"tool_choice": {"type": "tool", "name": "missing"}}, "tool_choice"),
        ({"source": {"trace_id": "xyz", "span_id": "0" * 16}}, "source"),
        ({"source": "abc"}, "source"),
    ],
)
def test_it_names_the_bad_field(client, acme, make_key, managed_call, change, field):
    key = make_key(acme, "read", "write")
    body = {"source": {"trace_id": managed_call[0], "span_id": managed_call[1]}, **GOOD, **change}
    response = client.post("/api/v1/playground", body, content_type="application/json", **auth(key))
    assert response.status_code == 400, response.content
    assert field in response.json()["detail"], response.json()


def test_it_opens_only_llm_calls(client, acme, make_key, managed_call):
    key = make_key(acme, "read")
    with tenant_scope(acme):
        spans = Span.objects.filter(trace_id=uuid.UUID(hex=managed_call[0]))
        (root,) = [s for s in spans if hexes(s) != managed_call]
    trace_id, span_id = hexes(root)
    response = client.get(f"/api/v1/playground/{span_id}?trace_id={trace_id}", **auth(key))
    assert response.status_code == 400 and "not an LLM call" in str(response.json()["detail"])
