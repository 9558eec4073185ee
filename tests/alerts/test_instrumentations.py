"""Hallucinated tool calls as the real instrumentations record them: the `anthropic`
SDK traced by OpenInference and by OpenLLMetry (which writes the GenAI conventions'
gen_ai.tool.definitions and gen_ai.output.messages) against the local Messages API
server, the spans sent through the span path, detection run over what it announced."""

import json

import anthropic
import httpx2
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from alerts.models import Alert
from tests.alerts.helpers import ingest_and_detect

pytestmark = pytest.mark.django_db

ORDER_TOOL = {
    "name": "lookup_order",
    "description": "Find an order by its number",
    "input_schema": {
        "type": "object",
        "properties": {"order": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"}},
        "required": ["order"],
        "additionalProperties": False,
    },
}
REFUND_TOOL = {
    "name": "refund_order",
    "description": "Refund an order",
    "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}},
}


class OfferedTool(httpx2.HTTPTransport):
    """Offers the model a tool the application did not declare, after the
    instrumentation recorded the request: the model's call of it is then a call of a
    tool the recorded request does not list, which is what a hallucinated tool name
    looks like in the spans."""

    def __init__(self, tool: dict):
        super().__init__()
        self.tool = tool

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        body["tools"] = [*body.get("tools", []), self.tool]
        content = json.dumps(body).encode()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        offered = httpx2.Request(
            request.method, request.url, headers=headers, content=content,
            extensions=request.extensions,
        )  # fmt: skip
        return super().handle_request(offered)


def ask(traced, instrumented_llm, instrumentation: str, text: str, *, offer=None):
    """One model call with the order tool declared, traced by the instrumentation under
    an agent root span; returns the exporter holding its spans and the trace id."""
    exporter = InMemorySpanExporter()
    provider, _ = traced(instrumentation, exporter)
    client = anthropic.Anthropic(
        base_url=instrumented_llm.url,
        api_key="local-test-key",
        http_client=httpx2.Client(transport=OfferedTool(offer)) if offer else None,
    )
    tracer = provider.get_tracer("tests.agent")
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
    ) as root:
        response = client.messages.create(
            model="claude-test",
            max_tokens=200,
            messages=[{"role": "user", "content": text}],
            tools=[ORDER_TOOL],
        )
    assert response.stop_reason == "tool_use"  # the model did ask for a tool
    provider.force_flush()
    return exporter, f"{root.get_span_context().trace_id:032x}"


def detected(tenant, exporter, trace_id) -> list[Alert]:
    ingest_and_detect(tenant, exporter.get_finished_spans())
    return list(Alert.all_tenants.filter(tenant=tenant, trace_id=trace_id))


INSTRUMENTATIONS = ["openinference", "openllmetry"]


@pytest.mark.parametrize("instrumentation", INSTRUMENTATIONS)
def test_it_raises_a_tool_the_recorded_request_did_not_declare(
    acme, rule, traced, instrumented_llm, instrumentation
):
    rule("hallucinated_tool")
    exporter, trace = ask(
        traced, instrumented_llm, instrumentation, 'Please refund_order {"order": "A-17"}',
        offer=REFUND_TOOL,
    )  # fmt: skip
    (alert,) = detected(acme, exporter, trace)
    assert "'refund_order', which the request did not declare" in alert.summary
    assert alert.detail["declared"] == ["lookup_order"]
    assert alert.span_id  # it names the model call that asked for it


@pytest.mark.parametrize("instrumentation", INSTRUMENTATIONS)
def test_it_raises_a_declared_tool_called_with_arguments_its_schema_refuses(
    acme, rule, traced, instrumented_llm, instrumentation
):
    rule("hallucinated_tool")
    exporter, trace = ask(
        traced, instrumented_llm, instrumentation, 'Please lookup_order {"order": 17}'
    )
    (alert,) = detected(acme, exporter, trace)
    assert "'lookup_order' with arguments its schema refuses" in alert.summary
    assert "order: 17 is not of type" in alert.summary


@pytest.mark.parametrize("instrumentation", INSTRUMENTATIONS)
def test_it_accepts_a_declared_tool_called_with_valid_arguments(
    acme, rule, traced, instrumented_llm, instrumentation
):
    rule("hallucinated_tool")
    exporter, trace = ask(
        traced, instrumented_llm, instrumentation, 'Please lookup_order {"order": "A-17"}'
    )
    assert detected(acme, exporter, trace) == []


@pytest.mark.parametrize("instrumentation", INSTRUMENTATIONS)
def test_it_counts_a_repeated_model_request_as_a_loop(
    acme, rule, traced, instrumented_llm, instrumentation
):
    """The loop detector keys a model call by its recorded request, whichever
    instrumentation recorded it."""
    rule("loop", threshold=3)
    exporter = InMemorySpanExporter()
    provider, client = traced(instrumentation, exporter)
    tracer = provider.get_tracer("tests.agent")
    with tracer.start_as_current_span("invoke_agent support") as root:
        for _ in range(3):
            client.messages.create(
                model="claude-test",
                max_tokens=200,
                messages=[{"role": "user", "content": "Where is my order?"}],
            )
    provider.force_flush()
    (alert,) = detected(acme, exporter, f"{root.get_span_context().trace_id:032x}")
    assert alert.detector == "loop" and "claude-test called 3 times" in alert.summary
