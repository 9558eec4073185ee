"""A tenant's dictionaries are trained again when its traffic has moved on."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane import tenantcache
from controlplane.tenancy import tenant_scope
from tests.tracing.otlp import agent_trace, ingest_in_batches, provider_for
from tracing import selectors, services
from tracing.ingest import dictionaries
from tracing.models import Payload, PayloadDictionary, PayloadKind, Span
from tracing.tasks import refresh_dictionaries

PAYLOAD = PayloadDictionary.Purpose.PAYLOAD


def tool_results(count: int, seed: int):
    """Finished spans of a different agent: tool results in a vocabulary of their own."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("bcdfghklmnprstvz") for _ in range(rng.randint(5, 9)))
        for _ in range(400)
    ]
    memory = InMemorySpanExporter()
    tracer = provider_for(memory, service="crawler").get_tracer("tests")
    for _ in range(count):
        result = " ".join(rng.choice(words) for _ in range(80))
        with tracer.start_as_current_span(
            "execute_tool fetch",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "fetch",
                "gen_ai.tool.call.result": result,
            },
        ):
            pass
    return list(memory.get_finished_spans())


@pytest.mark.django_db(transaction=True)
def test_it_trains_a_new_dictionary_when_traffic_moves_on_and_reads_old_payloads(acme):
    memory = InMemorySpanExporter()
    provider = provider_for(memory)
    agent_trace(provider, steps=120)  # the first traffic trains the first dictionaries
    ingest_in_batches(acme, list(memory.get_finished_spans()), [60] * 4)
    with tenant_scope(acme):
        first = dictionaries.newest(acme.id, PAYLOAD)
        assert first is not None
        old_chat = Span.objects.filter(labels__operation="chat").order_by("start_ns").last()
        before = selectors.span_detail(span=old_chat)["input_messages"]

    ingest_in_batches(acme, tool_results(600, seed=3), [100] * 5)
    with tenant_scope(acme):
        serials = services.dictionaries_refresh(tenant_id=acme.id)
    assert serials[PAYLOAD] is not None and serials[PAYLOAD] > first

    # New payloads are compressed with it; payloads from before still read back.
    ingest_in_batches(acme, tool_results(5, seed=4), [])
    tenantcache.reset()
    with tenant_scope(acme):
        headers = {
            bytes(d)[0]
            for d in Payload.objects.filter(kind=PayloadKind.VALUE).values_list("data", flat=True)
            if d
        }
        assert dictionaries.COMPACT | serials[PAYLOAD] in headers
        assert dictionaries.COMPACT | first in headers
        assert selectors.span_detail(span=old_chat)["input_messages"] == before

    # Run again at once (the task, as a worker runs it): the new dictionary is as good
    # as a fresh one, nothing changes; the tenant is not due again for a week.
    refresh_dictionaries(tenant_id=acme.id)
    assert dictionaries.newest(acme.id, PAYLOAD) == serials[PAYLOAD]
    assert acme.id not in services.dictionaries_due()
    week_ago = timezone.now() - timedelta(days=8)
    PayloadDictionary.all_tenants.filter(tenant=acme).update(
        created_at=week_ago, checked_at=week_ago
    )
    assert acme.id in services.dictionaries_due()
