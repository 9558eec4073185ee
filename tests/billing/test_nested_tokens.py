"""A call the anthropic SDK traces itself, inside OpenInference's or OpenLLMetry's span
for it, counts once in the trace's tokens as soon as the spans are stored, before
costing has run, and once in its cost when it has."""

import anthropic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from billing.models import SpanCost
from controlplane.tenancy import tenant_scope
from tests.billing.helpers import cost_queue, send

pytestmark = pytest.mark.slow


def _agent_calls(provider, client, calls: int) -> tuple[int, int, int]:
    """(trace id, input tokens, output tokens) of `calls` model calls under an agent span."""
    tracer = provider.get_tracer("tests.agent")
    tokens_in = tokens_out = 0
    with tracer.start_as_current_span("support agent") as root:
        root.set_attribute("session.id", "nested-sdk")
        for i in range(calls):
            reply = client.messages.create(
                model="claude-test", max_tokens=100, messages=[{"role": "user", "content": f"q{i}"}]
            )
            tokens_in += reply.usage.input_tokens
            tokens_out += reply.usage.output_tokens
    provider.force_flush()
    return root.get_span_context().trace_id, tokens_in, tokens_out


@pytest.mark.parametrize("name", ["openinference", "openllmetry"])
@pytest.mark.parametrize("batches", ["one batch", "a batch a span"])
def test_a_call_traced_by_the_sdk_and_an_instrumentation_counts_once_before_costing(
    name, batches, traced, instrumented_llm, api, acme, make_key, settings
):
    exporter = InMemorySpanExporter()
    provider, _ = traced(name, exporter)
    # The SDK's own span of each call, on the instrumentation's provider: it nests.
    client = anthropic.Anthropic(
        base_url=instrumented_llm.url,
        api_key="local-test-key",
        open_telemetry={"tracer_provider": provider},
    )
    trace_id, tokens_in, tokens_out = _agent_calls(provider, client, calls=2)
    spans = exporter.get_finished_spans()
    usage = ("gen_ai.usage.output_tokens", "llm.token_count.completion")  # OpenInference's
    reports = [s for s in spans if any(s.attributes.get(k) for k in usage)]
    assert {s.instrumentation_scope.name for s in reports} >= {"com.anthropic.sdk.python"}
    assert len(reports) == 4 and tokens_in > 0  # each call reported twice
    key = make_key(acme, "read")
    with cost_queue(settings) as drain:
        for part in [spans] if batches == "one batch" else [[s] for s in spans]:
            send(acme, part)
        # Stored, not yet costed.
        trace = api.get(f"/api/v1/traces/{trace_id:032x}", key=key).json()["trace"]
        assert (trace["input_tokens"], trace["output_tokens"]) == (tokens_in, tokens_out)
        listed = api.get("/api/v1/traces", key=key).json()["items"]
        assert [(t["input_tokens"], t["output_tokens"]) for t in listed] == [
            (tokens_in, tokens_out)
        ]
        session = api.get("/api/v1/sessions/nested-sdk", key=key).json()["session"]
        assert (session["input_tokens"], session["output_tokens"]) == (tokens_in, tokens_out)
        drain()
    trace = api.get(f"/api/v1/traces/{trace_id:032x}", key=key).json()["trace"]
    assert (trace["input_tokens"], trace["output_tokens"]) == (tokens_in, tokens_out)
    with tenant_scope(acme):
        assert SpanCost.objects.filter(counted=True).count() == 2
