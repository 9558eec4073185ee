"""Helpers that send spans the way agents do: through the OpenTelemetry SDK."""

import json

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def provider_for(exporter, service: str = "support-agent") -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def text(role: str, content: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def agent_trace(provider, *, steps: int = 2, session: str = "conv-1", fail_tool: bool = False):
    """One invoke_agent root; per step a chat span resending the conversation and a tool span."""
    tracer = provider.get_tracer("flightdeck.tests")
    conversation = [text("user", "Where is my order? My e-mail is jane.doe@example.com")]
    with tracer.start_as_current_span(
        "invoke_agent support",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "gen_ai.conversation.id": session,
        },
    ) as root:
        for step in range(steps):
            call_id = f"call_{step}"
            reply = {
                "role": "assistant",
                "parts": [
                    {
                        "type": "tool_call",
                        "id": call_id,
                        "name": "lookup_order",
                        "arguments": {"order": 1000 + step},
                    }
                ],
            }
            with tracer.start_as_current_span(
                "chat claude-sonnet-4",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4",
                    "gen_ai.response.model": "claude-sonnet-4-20250514",
                    "gen_ai.usage.input_tokens": 100 + step,
                    "gen_ai.usage.output_tokens": 20,
                    "gen_ai.conversation.id": session,
                    "gen_ai.system_instructions": json.dumps(
                        [{"type": "text", "content": "You are a support agent."}]
                    ),
                    "gen_ai.input.messages": json.dumps(conversation),
                    "gen_ai.output.messages": json.dumps([reply]),
                },
            ):
                pass
            conversation.append(reply)
            result = (
                f"Order {1000 + step} shipped to 221B Baker Street. " + "tracking details " * 20
            )
            with tracer.start_as_current_span(
                "execute_tool lookup_order",
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "lookup_order",
                    "gen_ai.tool.call.id": call_id,
                    "gen_ai.tool.call.arguments": json.dumps({"order": 1000 + step}),
                    "gen_ai.tool.call.result": result,
                },
            ) as tool:
                if fail_tool:
                    tool.set_status(Status(StatusCode.ERROR, "lookup failed"))
            conversation.append(
                {
                    "role": "tool",
                    "parts": [{"type": "tool_call_response", "id": call_id, "response": result}],
                }
            )
        return root.get_span_context().trace_id, conversation


def ingest_in_batches(tenant, spans, sizes) -> None:
    """Send finished SDK spans as OTLP requests of the given sizes (the rest last)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tracing.ingest.pipeline import spans_ingest

    start = 0
    for size in [*sizes, len(spans)]:
        chunk = spans[start : start + size]
        if chunk:
            spans_ingest(tenant_id=tenant.id, request=encode_spans(chunk))
        start += size
