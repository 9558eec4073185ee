import pytest
from django.db.models import Sum

from billing import costs, services
from billing.models import CostTotal, PriceBook, SpanCost, UsageDaily, call_labels
from billing.prices import usd
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from tests.billing.helpers import chat_attrs, cost_queue, nested_call_trace, one_call, send
from tracing import labels
from tracing.models import Trace

pytestmark = pytest.mark.django_db


def _cost_all(tenant):
    """Cost every stored span of the tenant, as the queued tasks would."""
    from tracing.models import Span

    with tenant_scope(tenant):
        pairs = [(s.trace_id.hex, s.span_id_hex) for s in Span.objects.all()]
        return costs.spans_cost(tenant_id=tenant.id, spans=pairs)


def test_it_counts_a_nested_instrumentation_call_once(api, acme, make_key, settings):
    spans = nested_call_trace(calls=2)
    trace_hex = f"{spans[0].context.trace_id:032x}"
    with cost_queue(settings) as drain:
        send(acme, spans)
        assert drain() == 1
    key = make_key(acme, "read")
    body = api.get(f"/api/v1/traces/{trace_hex}", key=key).json()
    # Two calls of 253/67 tokens, each reported by two spans: 506/134, not 1012/268.
    assert (body["trace"]["input_tokens"], body["trace"]["output_tokens"]) == (506, 134)
    # 2 x (253 x $3 + 67 x $15) per million.
    assert body["trace"]["cost_usd"] == "0.003528"
    with tenant_scope(acme):
        rows = list(SpanCost.objects.order_by("span_id"))
        assert len(rows) == 4 and sum(r.counted for r in rows) == 2
        newest = PriceBook.objects.order_by("-version").first().version
        assert {r.price_version for r in rows} == {newest}

    def walk(nodes):
        for n in nodes:
            yield n
            yield from walk(n["children"])

    costed = [n for n in walk(body["spans"]) if n["cost_usd"] not in (None, "0")]
    assert len(costed) == 2 and all(n["cost_usd"] == "0.001764" for n in costed)
    session = api.get("/api/v1/sessions/conv-bill", key=key).json()["session"]
    assert session["cost_usd"] == "0.003528" and session["input_tokens"] == 506


def test_it_counts_once_when_the_two_reports_arrive_in_separate_batches(acme):
    spans = nested_call_trace(calls=1)  # [sdk child, openllmetry parent, agent root]
    send(acme, spans[:1])
    _cost_all(acme)
    send(acme, spans[1:])
    _cost_all(acme)
    with tenant_scope(acme):
        trace = Trace.objects.get()
        assert (trace.input_tokens, trace.output_tokens) == (253, 67)
        assert CostTotal.objects.get(dimension="trace").cost_nusd == 1_764_000
        assert SpanCost.objects.filter(counted=True).count() == 1


def test_sibling_spans_of_the_same_response_id_count_once(acme):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.tracing.otlp import provider_for

    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter).get_tracer("t")
    with tracer.start_as_current_span("agent"):
        for name in ("openinference chat", "openllmetry chat"):
            with tracer.start_as_current_span(name, attributes=chat_attrs(response_id="msg_1")):
                pass
    send(acme, exporter.get_finished_spans())
    _cost_all(acme)
    with tenant_scope(acme):
        assert list(SpanCost.objects.values_list("counted", flat=True).order_by("counted")) == [
            False,
            True,
        ]
        assert Trace.objects.get().input_tokens == 253


def test_roll_ups_equal_the_sum_of_their_spans_and_a_resend_changes_nothing(acme, settings):
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o-mini"]
    for i in range(9):
        one_call(
            acme,
            attrs=chat_attrs(
                models[i % 3],
                tokens=(100 * (i + 1), 10 * (i + 1)),
                agent=f"agent-{i % 2}",
                provider="openai" if models[i % 3].startswith("gpt") else "anthropic",
                **{"gen_ai.usage.cache_read.input_tokens": 7 * i},
            ),
        )
    assert _cost_all(acme) == 9
    assert _cost_all(acme) == 0  # a redelivered task: nothing twice
    with tenant_scope(acme):
        spans = SpanCost.objects.filter(counted=True)
        total = spans.aggregate(c=Sum("cost_nusd"), i=Sum("input_tokens"))
        daily = UsageDaily.objects.aggregate(c=Sum("cost_nusd"), i=Sum("input_tokens"))
        traces = CostTotal.objects.filter(dimension="trace").aggregate(c=Sum("cost_nusd"))
        assert total["c"] > 0 and daily["c"] == total["c"] == traces["c"]
        assert daily["i"] == total["i"] == sum(100 * (i + 1) for i in range(9))
        # Each row's agent and model are its span's labels'.
        values = labels.values_of(acme.id, {s.labels_id for s in spans})
        named = [(call_labels(values[s.labels_id]), s.cost_nusd) for s in spans]
        for agent in ("agent-0", "agent-1"):
            by_agent = UsageDaily.objects.filter(agent_name=agent).aggregate(c=Sum("cost_nusd"))
            assert by_agent["c"] == sum(c for (a, _, _), c in named if a == agent)
        for model in models:
            by_model = UsageDaily.objects.filter(model=model).aggregate(c=Sum("cost_nusd"))
            assert by_model["c"] == sum(c for (_, _, m), c in named if m == model)


def test_a_model_without_a_price_is_flagged_and_listed_not_free(api, acme, make_key):
    trace_hex = one_call(acme, attrs=chat_attrs("mystery-model-9", provider="acme-ai"))
    _cost_all(acme)
    key = make_key(acme, "read")
    trace = api.get(f"/api/v1/traces/{trace_hex}", key=key).json()["trace"]
    assert trace["cost_unknown"] is True
    usage = api.get("/api/v1/usage?group_by=model", key=key).json()
    assert usage["cost_unknown"] == [
        {"provider": "acme-ai", "model": "mystery-model-9", "calls": 1}
    ]
    assert usage["items"][0]["unknown_calls"] == 1


def test_an_override_prices_the_tenants_spans(acme):
    with tenant_scope(acme):
        services.price_overrides_set(
            tenant=acme,
            actor=Actor.system(),
            entries=[
                {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4",
                    "input_usd_per_mtok": "1",
                    "output_usd_per_mtok": "1",
                    "cache_read_usd_per_mtok": "0",
                    "cache_write_usd_per_mtok": "0",
                }
            ],
        )
    from billing.prices import cache

    cache.clear()
    one_call(acme, attrs=chat_attrs(tokens=(600, 400)))
    _cost_all(acme)
    with tenant_scope(acme):
        row = SpanCost.objects.get()
        assert usd(row.cost_nusd) == "0.001" and row.price_override and row.price_version is None
