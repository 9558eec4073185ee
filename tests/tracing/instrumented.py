"""The real instrumentations on the real `anthropic` SDK against the local Messages API
server: fixtures (a plugin of tests/conftest.py, so the browser tests have them too)
and the conversation the tests trace."""

import json

import anthropic
import pytest
from openinference.instrumentation.anthropic import AnthropicInstrumentor as OpenInference
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as OpenLLMetry

from execution.devllm.server import serve
from tests.tracing.otlp import provider_for

TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order",
        "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}},
    }
]
INSTRUMENTATIONS = {"openinference": OpenInference, "openllmetry": OpenLLMetry}


@pytest.fixture(scope="module")
def instrumented_llm():
    server = serve(port=0)
    yield server
    server.shutdown()


@pytest.fixture
def traced(instrumented_llm):
    """(provider, client): the named instrumentation on a provider exporting to `exporter`."""
    made = []

    def make(name: str, exporter):
        provider = provider_for(exporter, service=f"{name}-agent")
        instrumentor = INSTRUMENTATIONS[name]()
        instrumentor.instrument(tracer_provider=provider)
        made.append((instrumentor, provider))
        client = anthropic.Anthropic(base_url=instrumented_llm.url, api_key="local-test-key")
        return provider, client

    yield make
    for instrumentor, provider in made:
        instrumentor.uninstrument()
        provider.shutdown()


def conversation(provider, client, *, session: str, user: str) -> int:
    """Two model calls with a tool call between them, under an agent root span that says
    the session and the user and holds input.value / output.value (as OpenInference
    agents do). Returns the trace id."""
    tracer = provider.get_tracer("tests.agent")
    question = 'Please lookup_order {"order": "A-17"}'
    with tracer.start_as_current_span("support agent") as root:
        root.set_attribute("openinference.span.kind", "AGENT")
        root.set_attribute("session.id", session)
        root.set_attribute("user.id", user)
        root.set_attribute(
            "input.value", json.dumps({"messages": [{"role": "user", "content": question}]})
        )
        messages = [{"role": "user", "content": question}]
        first = client.messages.create(
            model="claude-test", max_tokens=200, system="Be brief.", messages=messages, tools=TOOLS
        )
        call = next(b for b in first.content if b.type == "tool_use")
        messages += [
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "shipped"}],
            },
        ]
        second = client.messages.create(
            model="claude-test", max_tokens=200, system="Be brief.", messages=messages, tools=TOOLS
        )
        root.set_attribute("output.value", json.dumps({"answer": second.content[0].text}))
        trace_id = root.get_span_context().trace_id
    provider.force_flush()
    return trace_id


def http_exporter(live_server, key):
    return HttpExporter(
        endpoint=f"{live_server.url}/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )
