"""Span labels: each combination stored once per tenant, read back by id."""

import pytest
from django.db import transaction

from controlplane import tenantcache
from controlplane.tenancy import tenant_scope
from tracing import labels
from tracing.models import SpanLabels

CHAT = ("support-agent", "", "chat", "anthropic", "claude-sonnet-4", "claude-sonnet-4-1", "")
TOOL = ("support-agent", "", "execute_tool", "", "", "", "lookup_order")


@pytest.mark.django_db(transaction=True)
def test_it_stores_each_combination_once_per_tenant_and_reads_it_back(acme, globex):
    with transaction.atomic():
        ids = labels.ids_for(acme.id, {CHAT, TOOL})
    with transaction.atomic():
        assert labels.ids_for(acme.id, {CHAT}) == {CHAT: ids[CHAT]}  # cached
    tenantcache.reset()
    with transaction.atomic():
        assert labels.ids_for(acme.id, {CHAT, TOOL}) == ids  # from the table
        other = labels.ids_for(globex.id, {CHAT})
    assert other[CHAT] not in ids.values()
    with tenant_scope(acme):
        assert SpanLabels.objects.count() == 2
    read = labels.values_of(acme.id, [ids[TOOL], None])
    assert read[ids[TOOL]]["tool_name"] == "lookup_order"
    assert read[None]["operation"] == ""
    # Another tenant's id reads as no labels, not as that tenant's.
    assert labels.values_of(globex.id, [ids[TOOL]])[ids[TOOL]] == labels.EMPTY


@pytest.mark.django_db(transaction=True)
def test_it_forgets_ids_of_a_rolled_back_batch_and_stays_bounded(acme, monkeypatch):
    with pytest.raises(RuntimeError), transaction.atomic():
        labels.ids_for(acme.id, {CHAT})
        raise RuntimeError("the batch failed")
    assert labels.ids_cache.get(acme.id, CHAT) is None  # learnt only on commit
    monkeypatch.setattr(labels.ids_cache, "size", 3)
    monkeypatch.setattr(labels.values_cache, "size", 3)
    many = {(f"service-{i}", "", "chat", "", "", "", "") for i in range(10)}
    with transaction.atomic():
        ids = labels.ids_for(acme.id, many)
    assert len(labels.ids_cache) <= 3 and len(labels.values_cache) <= 3
    assert {v["service_name"] for v in labels.values_of(acme.id, ids.values()).values()} >= {
        f"service-{i}" for i in range(10)
    }
