"""Spans the way instrumented agents send them, the costing queue drained in this
process as a worker would run it, and a managed run's gateway driven from a test."""

import os
import uuid
from contextlib import contextmanager

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.tracing.otlp import provider_for
from tests.tracing.searchdata import drain_queue
from tracing.ingest.pipeline import spans_ingest


def drain_cost_queue(queue: str) -> int:
    from billing.tasks import cost_spans

    return drain_queue(queue, cost_spans)


@contextmanager
def cost_queue(settings):
    """Route costing to a queue of this test's own; yields a drain() callable."""
    tag = (os.environ.get("FLIGHTDECK_REDIS_PREFIX") or f"fdtest-{os.getpid()}:").strip(":")
    queue = f"{tag}-cost-{uuid.uuid4().hex[:8]}"
    settings.BILLING_QUEUE = queue
    try:
        yield lambda: drain_cost_queue(queue)
    finally:
        drain_cost_queue(queue)


def chat_attrs(
    model="claude-sonnet-4-20250514",
    *,
    tokens=(253, 67),
    response_id=None,
    agent="support",
    provider="anthropic",
    **extra,
) -> dict:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1],
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": "conv-bill",
    }
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    attrs.update(extra)
    return attrs


def nested_call_trace(*, calls=2, agent="support", model="claude-sonnet-4-20250514"):
    """A trace whose every LLM call is reported twice: OpenLLMetry's span and, inside
    it, the anthropic SDK's own `messages.create` span, both with the call's usage.
    Returns the finished spans (child first, as the SDK ends them)."""
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter, service=agent).get_tracer("openllmetry")
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent},
    ):
        for i in range(calls):
            rid = f"msg_{uuid.uuid4().hex[:12]}"
            with (
                tracer.start_as_current_span(
                    f"anthropic.chat {i}",
                    attributes=chat_attrs(model, response_id=rid, agent=agent),
                ),
                tracer.start_as_current_span(
                    "messages.create",
                    attributes=chat_attrs(
                        model, agent=agent, **{"gen_ai.usage.cache_read.input_tokens": 0}
                    ),
                ),
            ):
                pass
    return exporter.get_finished_spans()


def send(tenant, spans):
    return spans_ingest(tenant_id=tenant.id, request=encode_spans(list(spans)))


def one_call(tenant, *, attrs, name="chat"):
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter).get_tracer("t")
    with tracer.start_as_current_span(name, attributes=attrs) as span:
        trace_id = span.get_span_context().trace_id
    send(tenant, exporter.get_finished_spans())
    return f"{trace_id:032x}"


def gateway_for(run, tmp_path):
    """The run's gateway as its worker makes it, called from the test's own threads."""
    from execution.gateway import Gateway
    from execution.spans import RunTracer

    tracer = RunTracer(
        tenant_id=run.tenant_id, run_id=run.pk, agent_name=run.agent.name, trace_id=run.trace_id
    )
    return Gateway(
        run=run,
        manifest=run.version.manifest,
        limits=run.limits,
        tracer=tracer,
        socket_path=tmp_path / f"{run.pk}.sock",
    )
