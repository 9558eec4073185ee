"""Traces for the read API, UI and browser tests, sent through the OpenTelemetry SDK,
and the search index's queue drained the way a worker would run it."""

import json
import os
import uuid
from contextlib import contextmanager

from opentelemetry import trace as otel
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.tracing.otlp import provider_for, text

BASE_NS = 1_760_000_000_000_000_000  # 2025-10-09, fixed so tests can filter on time


def queue_name() -> str:
    tag = (os.environ.get("FLIGHTDECK_REDIS_PREFIX") or f"fdtest-{os.getpid()}:").strip(":")
    return f"{tag}-index-{uuid.uuid4().hex[:8]}"


def queued_messages(queue: str):
    """Each message on this queue of the real broker, until it is empty; the caller acks
    what it has handled."""
    from controlplane.celery import app

    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        try:
            while True:
                try:
                    yield simple.get(block=False)
                except simple.Empty:
                    return
        finally:
            simple.close()


def drain_queue(queue: str, task) -> int:
    """Run every queued message of `task` on this queue in this process, as a worker would;
    returns how many ran."""
    ran = 0
    for message in queued_messages(queue):
        assert message.headers["task"] == task.name
        args, kwargs, _ = message.decode()
        task(*args, **kwargs)
        message.ack()
        ran += 1
    return ran


def drain_index_queue(queue: str) -> int:
    """Run every queued `tracing.index_spans` task of this queue in this process."""
    from tracing.tasks import index_spans

    return drain_queue(queue, index_spans)


@contextmanager
def index_queue(settings):
    """Route search indexing to a queue of this test's own; yields a drain() callable."""
    queue = queue_name()
    settings.SEARCH_INDEX_QUEUE = queue
    try:
        yield lambda: drain_index_queue(queue)
    finally:
        drain_index_queue(queue)  # leave nothing behind in the shared broker


def conversation_trace(
    provider,
    *,
    agent="support",
    model="claude-sonnet-4",
    session="conv-1",
    user="Where is my order? My e-mail is jane.doe@example.com",
    answer="It has shipped.",
    tool_result="Order 1000 shipped to 221B Baker Street",
    error=False,
    start_ns=None,
    duration_ms=1500,
    attrs=None,
) -> str:
    """invoke_agent → chat (tool call) → execute_tool → chat (answer); returns the trace id
    hex. Times are fixed so duration and time filters can be tested."""
    tracer = provider.get_tracer("flightdeck.tests")
    t0 = start_ns or BASE_NS
    end = t0 + int(duration_ms * 1e6)
    step = (end - t0) // 4
    system = json.dumps([{"type": "text", "content": "You are a helpful support agent."}])
    call = {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "lookup_order",
                "arguments": {"order": 1000},
            }
        ],
    }
    result = {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": tool_result}],
    }
    root = tracer.start_span(
        f"invoke_agent {agent}",
        kind=SpanKind.INTERNAL,
        start_time=t0,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": session,
            **(attrs or {}),
        },
    )
    ctx = otel.set_span_in_context(root)

    def chat(start, messages, output):
        span = tracer.start_span(
            f"chat {model}",
            context=ctx,
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": model,
                "gen_ai.response.model": f"{model}-20250514",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.conversation.id": session,
                "gen_ai.system_instructions": system,
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps([output]),
            },
        )
        span.end(end_time=start + step)

    conversation = [text("user", user)]
    chat(t0 + 1000, conversation, call)
    tool = tracer.start_span(
        "execute_tool lookup_order",
        context=ctx,
        start_time=t0 + step,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "lookup_order",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": json.dumps({"order": 1000}),
            "gen_ai.tool.call.result": tool_result,
        },
    )
    if error:
        tool.set_status(Status(StatusCode.ERROR, "lookup_order timed out"))
    tool.end(end_time=t0 + 2 * step)
    conversation += [call, result]
    chat(t0 + 2 * step, conversation, text("assistant", answer))
    if error:
        root.set_status(Status(StatusCode.ERROR, "tool failed"))
    root.end(end_time=end)
    return f"{root.get_span_context().trace_id:032x}"


def in_process_provider(tenant, service="support-agent"):
    from tracing.exporter import InProcessSpanExporter

    return provider_for(InProcessSpanExporter(tenant.id), service=service)
