"""Hallucinated tool calls in the other shapes the span path normalises (OpenAI's tool
definitions, OpenInference's flattened messages, OpenLLMetry's pre-convention
attributes), hostile tool lists and arguments that must not stop ingest or
detection, and detection's query count, which does not grow with a batch's agents."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from alerts.models import Alert, TraceWatch
from alerts.tasks import detect_spans
from billing.costs import spans_cost
from billing.models import SpanCost
from tests.alerts.helpers import ORDER_SCHEMA, Recorder, announced, ingest_and_detect
from tests.billing.conftest import price_book  # noqa: F401 - cost spike reads costs
from tests.tracing.otlp import provider_for
from tracing.ingest.pipeline import spans_ingest

pytestmark = pytest.mark.django_db

USER = [{"role": "user", "parts": [{"type": "text", "content": "where is order 7?"}]}]


def chat_span(attributes: dict) -> str:
    """One chat span with these attributes under an agent root; the trace id."""
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter).get_tracer("tests.shapes")
    with (
        tracer.start_as_current_span(
            "invoke_agent support",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
        ) as root,
        tracer.start_as_current_span("chat", attributes=attributes),
    ):
        pass
    chat_span.spans = exporter.get_finished_spans()
    return f"{root.get_span_context().trace_id:032x}"


def genai(definitions, calls) -> dict:
    """The GenAI conventions: gen_ai.tool.definitions and gen_ai.output.messages."""
    parts = [{"type": "tool_call", "id": f"c{i}", "name": n, "arguments": a}
             for i, (n, a) in enumerate(calls)]  # fmt: skip
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.input.messages": json.dumps(USER),
        "gen_ai.tool.definitions": json.dumps(definitions),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": parts}]),
    }


def openai_chat_completions(calls) -> dict:
    # Chat Completions' tools, and arguments as the JSON text the API returns.
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": ORDER_SCHEMA}}]
    return genai(tools, [(n, json.dumps(a)) for n, a in calls])


def openai_responses(calls) -> dict:
    tools = [
        {"type": "function", "name": "lookup_order", "parameters": ORDER_SCHEMA, "strict": True}
    ]
    return genai(tools, [(n, json.dumps(a)) for n, a in calls])


def gemini(calls) -> dict:
    tools = [{"function_declarations": [{"name": "lookup_order", "parameters": ORDER_SCHEMA}]}]
    return genai(tools, calls)


def openinference_openai(calls) -> dict:
    """openinference-instrumentation-openai's attributes: the tool as its JSON schema,
    the response's calls flattened."""
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-test",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "where is order 7?",
        "llm.tools.0.tool.json_schema": json.dumps(
            {"type": "function", "function": {"name": "lookup_order", "parameters": ORDER_SCHEMA}}
        ),
        "llm.output_messages.0.message.role": "assistant",
    }
    for i, (name, arguments) in enumerate(calls):
        prefix = f"llm.output_messages.0.message.tool_calls.{i}.tool_call"
        attrs[f"{prefix}.id"] = f"call_{i}"
        attrs[f"{prefix}.function.name"] = name
        attrs[f"{prefix}.function.arguments"] = json.dumps(arguments)
    return attrs


def openllmetry_legacy(calls) -> dict:
    """OpenLLMetry before the GenAI conventions: llm.request.functions.N.* and
    gen_ai.completion.N.tool_calls.M.*."""
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "where is order 7?",
        "llm.request.functions.0.name": "lookup_order",
        "llm.request.functions.0.description": "Find an order",
        "llm.request.functions.0.parameters": json.dumps(ORDER_SCHEMA),
        "gen_ai.completion.0.role": "assistant",
    }
    for i, (name, arguments) in enumerate(calls):
        attrs[f"gen_ai.completion.0.tool_calls.{i}.id"] = f"call_{i}"
        attrs[f"gen_ai.completion.0.tool_calls.{i}.name"] = name
        attrs[f"gen_ai.completion.0.tool_calls.{i}.arguments"] = json.dumps(arguments)
    return attrs


SHAPES = [openai_chat_completions, openai_responses, gemini, openinference_openai,
          openllmetry_legacy]  # fmt: skip


def alerts_of(tenant, trace):
    return list(Alert.all_tenants.filter(tenant=tenant, trace_id=trace))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
@pytest.mark.parametrize(
    "calls,expected",
    [
        ([("refund_order", {"order": 7})], "'refund_order', which the request did not declare"),
        ([("lookup_order", {"order": "seven"})], 'order: "seven" is not of type "integer"'),
        ([("lookup_order", {"order": 7})], None),
    ],
    ids=["undeclared", "invalid", "valid"],
)
def test_it_judges_tool_calls_in_every_shape(acme, rule, shape, calls, expected):
    rule("hallucinated_tool")
    trace = chat_span(shape(calls))
    ingest_and_detect(acme, chat_span.spans)
    found = alerts_of(acme, trace)
    if expected is None:
        assert found == []
    else:
        (alert,) = found
        assert expected in alert.summary


class Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        Counting.hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"type": "string"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def schema_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Counting.hits = 0
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


HOSTILE = {
    # name: (definitions, the call's arguments, does that call raise an alert)
    "huge schema": (
        [{"name": "lookup_order", "input_schema": {"enum": [f"value-{i}" for i in range(40_000)]}}],
        {"order": 7},
        False,  # not judged: past MAX_SCHEMA_BYTES
    ),
    "invalid schema": ([{"name": "lookup_order", "input_schema": {"type": 12}}], {}, False),
    "bad pattern": ([{"name": "lookup_order", "input_schema": {"pattern": "("}}], "x", False),
    "catastrophic pattern": (
        [{"name": "lookup_order", "input_schema": {"type": "string", "pattern": "^(a+)+$"}}],
        "a" * 5000 + "!",
        True,
    ),
    "unresolvable ref": ([{"name": "lookup_order", "input_schema": {"$ref": "#/nope"}}], {}, False),
    "deep schema": ([{"name": "lookup_order", "input_schema": json.loads(nested(900))}], {}, False),
    "list arguments": ([{"name": "lookup_order", "input_schema": ORDER_SCHEMA}], [1, 2], True),
    "number arguments": ([{"name": "lookup_order", "input_schema": ORDER_SCHEMA}], 42, True),
    "text arguments": (
        [{"name": "lookup_order", "input_schema": ORDER_SCHEMA}],
        "order seven",
        True,
    ),
    "deep arguments": (
        [{"name": "lookup_order", "input_schema": ORDER_SCHEMA}],
        nested(5000),
        True,
    ),
    "huge arguments": (
        [{"name": "lookup_order", "input_schema": ORDER_SCHEMA}],
        "x" * 300_000,
        True,
    ),
    "definitions not a list": ("lookup_order", {"order": 7}, False),
    "definition without a name": ([{"name": ["lookup_order"]}, 7, None], {"order": 7}, False),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_it_survives_hostile_tool_lists_and_arguments(acme, rule, case):
    """Neither ingest nor detection fails; the hostile call is judged or passed over,
    and an undeclared call in the same response is still raised."""
    rule("hallucinated_tool")
    definitions, arguments, raises = HOSTILE[case]
    attrs = genai([], [])
    attrs["gen_ai.tool.definitions"] = (
        definitions if isinstance(definitions, str) else json.dumps(definitions)
    )
    attrs["gen_ai.output.messages"] = json.dumps(
        [{"role": "assistant", "parts": [
            {"type": "tool_call", "id": "c0", "name": "lookup_order", "arguments": arguments},
            {"type": "tool_call", "id": "c1", "name": "refund_order", "arguments": {}},
        ]}]
    )  # fmt: skip
    trace = chat_span(attrs)
    ingest_and_detect(acme, chat_span.spans)
    summaries = sorted(a.summary for a in alerts_of(acme, trace))
    complete = isinstance(definitions, list) and all(
        isinstance(d, dict) and isinstance(d.get("name"), str) for d in definitions
    )
    assert any("'refund_order', which the request did not declare" in s for s in summaries) == (
        complete
    )
    assert any("'lookup_order' with arguments" in s for s in summaries) == raises
    assert TraceWatch.all_tenants.filter(tenant=acme, trace_id=trace).exists()


def test_it_never_fetches_a_schemas_remote_ref(acme, rule, schema_host):
    rule("hallucinated_tool")
    attrs = genai(
        [{"name": "lookup_order", "input_schema": {"$ref": f"{schema_host}/order.json"}}],
        [("lookup_order", {"order": 7})],
    )
    trace = chat_span(attrs)
    ingest_and_detect(acme, chat_span.spans)
    assert alerts_of(acme, trace) == []  # a schema that cannot be resolved judges nothing
    assert Counting.hits == 0


def test_it_survives_malformed_output_messages(acme, rule):
    rule("hallucinated_tool")
    attrs = genai([{"name": "lookup_order", "input_schema": ORDER_SCHEMA}], [])
    attrs["gen_ai.output.messages"] = json.dumps(
        [{"role": "assistant", "parts": 5}, "text", {"role": "assistant", "parts": [
            {"type": "tool_call", "name": {"not": "a name"}, "arguments": {}}, None, 3,
        ]}]
    )  # fmt: skip
    trace = chat_span(attrs)
    ingest_and_detect(acme, chat_span.spans)
    assert TraceWatch.all_tenants.filter(tenant=acme, trace_id=trace).exists()


def agents_batch(tenant, agents: int) -> list:
    """One OTLP request of 50 traces, each a chat span declaring a tool and calling it
    validly and a tool span, spread over `agents` agents; costed as billing costs it.
    Returns the batch the span path announced."""
    rec = Recorder()
    for i in range(50):
        rec.agent = f"agent-{i % agents}"
        rec.trace(
            lambda r, i=i: (
                r.chat(
                    tools=[("lookup_order", ORDER_SCHEMA)],
                    calls=[("lookup_order", {"order": i})],
                    **{"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100},
                ),
                r.tool("lookup_order", {"order": i}),
            )
        )
    with announced() as seen, TestCase.captureOnCommitCallbacks(execute=True):
        spans_ingest(tenant_id=tenant.id, request=encode_spans(list(rec.spans())))
    ((_, batch),) = seen
    spans_cost(tenant_id=tenant.id, spans=[tuple(s) for s in batch])
    # Costs to compare: cost spike reads each agent's recent traces.
    assert SpanCost.all_tenants.filter(tenant=tenant, cost_nusd__gt=0).count() >= 50
    return batch


def test_it_reads_a_batch_in_the_same_queries_for_one_agent_as_for_fifty(acme, rule):
    for detector in ("loop", "hallucinated_tool", "error_burst", "cost_spike"):
        rule(detector)
    counts = []
    for agents in (1, 50, 1, 50):  # the second pair: traces of agents with a cost history
        batch = agents_batch(acme, agents)
        with CaptureQueriesContext(connection) as queries:
            detect_spans(tenant_id=acme.id, spans=batch)
        counts.append(len(queries))
    assert counts[0] == counts[1] and counts[2] == counts[3]
    assert Alert.all_tenants.filter(tenant=acme).count() == 0  # nothing raised: reads only
