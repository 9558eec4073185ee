"""Reaching a hard cap is announced once per budget window whatever thresholds the
budget lists: when spend reaches it, and when it first refuses a call, on both stores,
also when many calls are refused at once."""

import threading

import pytest
from django.db import connection

from billing.budgets import windows_for
from billing.hook import BudgetHook
from billing.models import Budget, ThresholdCrossing
from billing.signals import budget_threshold_crossed
from billing.store import RedisStore
from controlplane.tenancy import tenant_scope
from execution.budget import BudgetRefused
from tests.billing.helpers import cost_queue, send
from tests.billing.test_budgets import _call_spans

pytestmark = pytest.mark.django_db
REQUEST = {"model": "claude-sonnet-4-20250514", "max_tokens": 64, "messages": []}


@pytest.fixture
def events():
    seen = []

    def listen(sender, **kwargs):
        seen.append(kwargs)

    budget_threshold_crossed.connect(listen, dispatch_uid="test-cap-events")
    yield seen
    budget_threshold_crossed.disconnect(dispatch_uid="test-cap-events")


def _budget(tenant, cap_nusd, thresholds):
    with tenant_scope(tenant):
        return Budget.objects.create(
            tenant=tenant, scope="agent", agent="support", period="month",
            cap_nusd=cap_nusd, thresholds=thresholds,
        )  # fmt: skip


def _refuse(tenant, hook=None):
    """A playground-style call of agent support; True when the budget refused it."""
    hook = hook or BudgetHook()
    try:
        with tenant_scope(tenant):
            hook.reserve(run_id=None, tenant_id=tenant.id, agent="support", request=REQUEST)
    except BudgetRefused:
        return True
    finally:
        connection.close()
    return False


def test_external_spend_reaching_the_cap_is_announced_although_no_threshold_lists_it(
    transactional_db, acme, settings, events
):
    # $0.001764 a call against a $0.01 cap: the sixth call reaches it.
    budget = _budget(acme, 10_000_000, [0.5])
    batches = [_call_spans() for _ in range(7)]
    with cost_queue(settings) as drain:
        for batch in batches[:5]:
            send(acme, batch)
        drain()
        assert [(e["threshold"], e["cap_reached"]) for e in events] == [(0.5, False)]
        for batch in batches[5:]:
            send(acme, batch)
        drain()
        for batch in batches:  # resent by the exporter
            send(acme, batch)
        drain()
    assert [(e["threshold"], e["cap_reached"], e["refused"]) for e in events] == [
        (0.5, False, False),
        (1.0, True, False),
    ]
    assert events[1]["budget_id"] == budget.pk and events[1]["spent_usd"] == "0.010584"


def test_spend_under_the_cap_announces_no_cap(transactional_db, acme, settings, events):
    _budget(acme, 10_000_000, [0.5])
    with cost_queue(settings) as drain:
        for _ in range(4):
            send(acme, _call_spans())
        drain()
    assert [e["threshold"] for e in events] == [0.5]
    assert not _refuse(acme)  # a call that fits is held, and announces nothing
    assert [e["threshold"] for e in events] == [0.5]


def test_a_listed_threshold_of_one_is_the_cap_announced_once(
    transactional_db, acme, settings, events
):
    _budget(acme, 10_000_000, [0.5, 1.0])
    with cost_queue(settings) as drain:
        for _ in range(7):
            send(acme, _call_spans())
        drain()
    assert _refuse(acme)
    assert [(e["threshold"], e["cap_reached"]) for e in events] == [(0.5, False), (1.0, True)]


def _refused_calls_announce_the_cap_once(tenant, events, *, threads=8):
    # The call's worst case (64 output tokens alone are ~$0.001) passes a $0.0001 cap.
    budget = _budget(tenant, 100_000, [0.5])
    refused = []
    workers = [
        threading.Thread(target=lambda: refused.append(_refuse(tenant))) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert refused == [True] * threads
    assert _refuse(tenant)  # and again later, from another process's hook
    (event,) = events
    assert (event["budget_id"], event["threshold"], event["cap_reached"], event["refused"]) == (
        budget.pk,
        1.0,
        True,
        True,
    )
    assert event["spent_usd"] == "0" and event["cap_usd"] == "0.0001"
    assert ThresholdCrossing.all_tenants.filter(budget=budget).count() == 1
    return budget


@pytest.mark.postgres
def test_calls_refused_at_once_announce_the_cap_once_on_the_database_store(
    transactional_db, acme, settings, events
):
    assert connection.vendor == "postgresql"
    settings.BILLING_BUDGET_STORE = "database"
    _refused_calls_announce_the_cap_once(acme, events)


@pytest.mark.redis
@pytest.mark.postgres
def test_calls_refused_at_once_announce_the_cap_once_on_redis(
    transactional_db, acme, settings, events
):
    settings.BILLING_BUDGET_STORE = "redis"
    budget = _refused_calls_announce_the_cap_once(acme, events)
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    with tenant_scope(acme):
        for w in windows_for(tenant_id=acme.id, agent="support", run_id=None):
            if w.budget_id == budget.pk:
                client.delete(RedisStore.key(w))
