"""Recorded traces sent through the real span path, and detection run in this process
as a worker would run it, over exactly the spans the span path announced."""

import json
from contextlib import contextmanager

from django.test import TestCase
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from alerts.tasks import detect_spans
from tests.tracing.otlp import provider_for
from tracing.ingest.pipeline import spans_ingest
from tracing.signals import spans_ingested

# A tool's declared arguments: an integer order number and nothing else.
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "integer"}},
    "required": ["order"],
    "additionalProperties": False,
}


@contextmanager
def announced():
    """Collect what spans_ingested announces."""
    seen = []

    def collect(sender, *, tenant_id, spans, **kwargs):
        seen.append((tenant_id, [list(p) for p in spans]))

    spans_ingested.connect(collect, dispatch_uid="tests.alerts.collect")
    try:
        yield seen
    finally:
        spans_ingested.disconnect(dispatch_uid="tests.alerts.collect")


def ingest_and_detect(tenant, spans) -> list:
    """Store the spans, then run detection on each announced batch; the batches."""
    with announced() as seen, TestCase.captureOnCommitCallbacks(execute=True):
        spans_ingest(tenant_id=tenant.id, request=encode_spans(list(spans)))
    for tenant_id, batch in seen:
        detect_spans(tenant_id=tenant_id, spans=batch)
    return seen


class Recorder:
    """Builds one agent trace: tool calls and chat calls, as an instrumented agent
    records them."""

    def __init__(self, agent="support"):
        self.exporter = InMemorySpanExporter()
        self.tracer = provider_for(self.exporter).get_tracer("flightdeck.tests")
        self.agent = agent

    def trace(self, body):
        with self.tracer.start_as_current_span(
            f"invoke_agent {self.agent}",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.agent},
        ) as root:
            body(self)
        return f"{root.get_span_context().trace_id:032x}"

    def tool(self, name, arguments, *, error=False):
        with self.tracer.start_as_current_span(
            f"execute_tool {name}",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.agent.name": self.agent,
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.arguments": json.dumps(arguments),
            },
        ) as span:
            if error:
                span.set_status(Status(StatusCode.ERROR, "failed"))

    def chat(self, *, tools: list, calls: list, attrs_form="genai", **extra):
        reply = {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": f"c{i}", "name": n, "arguments": a}
                for i, (n, a) in enumerate(calls)
            ],
        }
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.agent.name": self.agent,
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "where is order 7?"}]}]
            ),
            "gen_ai.output.messages": json.dumps([reply]),
            **extra,
        }
        if attrs_form == "genai":
            attrs["gen_ai.tool.definitions"] = json.dumps(
                [{"type": "function", "name": t, "parameters": s} for t, s in tools]
            )
        else:  # OpenInference
            for i, (t, s) in enumerate(tools):
                attrs[f"llm.tools.{i}.tool.json_schema"] = json.dumps(
                    {"type": "function", "function": {"name": t, "parameters": s}}
                )
        with self.tracer.start_as_current_span("chat claude-sonnet-4", attributes=attrs):
            pass

    def spans(self):
        return self.exporter.get_finished_spans()
