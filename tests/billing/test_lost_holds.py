"""A worker lost while it holds a reservation (after `reserve` committed, before the
settlement's commit): when the run is taken up again, what it held is given back
exactly once, on either store, and the cap still holds."""

import gc
from datetime import timedelta

import pytest
from django.utils import timezone

from billing import budgets
from billing.budgets import windows_for
from billing.hook import BudgetHook
from billing.models import Budget, BudgetHold, LedgerEntry
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.budget import BudgetRefused
from execution.models import Run, RunStatus
from replay.models import JournalStep
from tests.billing.helpers import gateway_for
from tests.execution.bundles import agent_with_bundle

MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-4-5"\n'
NOOP = "def main(ctx, input):\n    return None\n"
CALL = {"max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
REQUEST = {"model": "claude-sonnet-4-5", **CALL}
USAGE = {"input_tokens": 10, "output_tokens": 5}

STORES = ["database", pytest.param("redis", marks=pytest.mark.redis)]


def _store(settings, store, tenant):
    settings.BILLING_BUDGET_STORE = store
    settings.REDIS_PREFIX = f"{settings.REDIS_PREFIX}lost-holds-{tenant.pk}:"


def _run(tenant):
    agent = agent_with_bundle(tenant, code=NOOP, manifest=MANIFEST)
    with tenant_scope(tenant):
        run = services.run_create(
            tenant=tenant, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        return Run.objects.select_related("agent", "version").get(pk=run.pk)


def _budget(tenant, cap: int) -> None:
    Budget.objects.create(tenant=tenant, scope="tenant", period="day", cap_nusd=cap)
    budgets.cache.invalidate(tenant.id)  # this process may have asked before it was made


def _worst_case(run) -> int:
    """What one call of REQUEST reserves (no budget yet: nothing is held)."""
    return BudgetHook().reserve(run_id=run.pk, request=REQUEST).amount_nusd


def _lose_a_hold(run):
    """A worker reserves a call and is lost before it settles: its hook is gone."""
    hook = BudgetHook()
    lost = hook.reserve(run_id=run.pk, request=REQUEST)
    del hook
    gc.collect()
    return lost


def _claim_and_lose(run, **more):
    """A worker of another host claims the run, reserves a call and is lost: its lease
    runs out (`more`: other fields of the run as the lost worker left it)."""
    assert services.run_claim(run_id=run.pk, worker_id="elsewhere:1") is not None
    lost = _lose_a_hold(run)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(1), **more)
    return lost


def _released(run):
    return list(LedgerEntry.objects.filter(run_id=run.pk, entry="release", detail__reconciled=True))


@pytest.mark.parametrize("store", STORES)
def test_it_gives_back_a_lost_workers_hold_once_and_the_cap_still_holds(
    acme, tmp_path, messages_api, settings, transactional_db, store
):
    _store(settings, store, acme)
    run = _run(acme)
    with tenant_scope(acme):
        worst = _worst_case(run)
        # Room for two calls held at once (and the one settled first), not three.
        _budget(acme, 3 * worst)
        windows = windows_for(tenant_id=acme.id, agent=run.agent.name, run_id=run.pk)
        gateway = gateway_for(run, tmp_path)
        state = gateway.budget.store.state
        assert gateway.handle("llm.messages", CALL)["ok"]
        spent, held = state(windows)[0]
        assert 0 < spent < worst and held == 0
        if store == "database":  # settled in its journal step's commit: no hold left
            assert not BudgetHold.objects.filter(run_id=run.pk).exists()

        lost = _lose_a_hold(run)
        assert state(windows)[0] == (spent, worst)
        # The lost hold counts against the cap until it is given back.
        held_too = BudgetHook().reserve(run_id=run.pk, request=REQUEST)
        with pytest.raises(BudgetRefused):
            BudgetHook().reserve(run_id=run.pk, request=REQUEST)
        BudgetHook().settle(reservation=held_too, usage=None)  # failed upstream: costs 0
        assert state(windows)[0] == (spent, worst)

        # Taken up again: the lost hold is given back, with a ledger row saying so.
        BudgetHook().reconcile(run_id=run.pk)
        assert state(windows)[0] == (spent, 0)
        [row] = _released(run)
        assert (row.reservation, row.kind, row.amount_nusd) == (lost.id, "llm", worst)
        BudgetHook().reconcile(run_id=run.pk)  # twice changes nothing
        assert state(windows)[0] == (spent, 0) and len(_released(run)) == 1

        # The cap holds as before: two calls held at once, not three.
        hook = BudgetHook()
        first = hook.reserve(run_id=run.pk, request=REQUEST)
        second = hook.reserve(run_id=run.pk, request=REQUEST)
        with pytest.raises(BudgetRefused):
            hook.reserve(run_id=run.pk, request=REQUEST)
        assert state(windows)[0] == (spent, 2 * worst)

        # The lost worker's call answered after all: its spend counts, once, and it
        # takes back nothing it no longer holds.
        late = lost.price.cost_nusd(input_tokens=10, output_tokens=5, cache_read=0, cache_write=0)
        BudgetHook().settle(reservation=lost, usage=USAGE)
        BudgetHook().settle(reservation=lost, usage=USAGE)
        assert state(windows)[0] == (spent + late, 2 * worst)
        for r in (first, second):
            hook.settle(reservation=r, usage=USAGE)
        hook.flush()
        assert state(windows)[0] == (spent + 3 * late, 0)


@pytest.mark.parametrize("store", STORES)
def test_a_run_taken_up_again_gives_back_what_its_lost_worker_held(
    acme, messages_api, settings, transactional_db, store
):
    """Through the worker's path: the supervisor of the run's second attempt reconciles."""
    _store(settings, store, acme)
    run = _run(acme)
    with tenant_scope(acme):
        _budget(acme, 10**10)
        windows = windows_for(tenant_id=acme.id, agent=run.agent.name, run_id=run.pk)
        lost = _claim_and_lose(run)
        store_of = BudgetHook().store
        assert store_of.state(windows)[0] == (0, lost.amount_nusd)

        services.run_execute(run_id=run.pk, worker_id="test-worker")
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED and run.attempts == 2
        # Nothing left held: the lost call given back, the sandbox's time settled.
        spent, held = store_of.state(windows)[0]
        assert held == 0
        assert spent == sum(
            LedgerEntry.objects.filter(run_id=run.pk, entry="settle").values_list(
                "amount_nusd", flat=True
            )
        )
        [row] = _released(run)
        assert row.reservation == lost.id and row.amount_nusd == lost.amount_nusd
        if store == "database":  # kept, given back, for the lost worker's late answer
            holds = BudgetHold.objects.filter(run_id=run.pk)
            assert list(holds.values_list("reservation", "released")) == [(lost.id, True)]


@pytest.mark.parametrize("store", STORES)
def test_a_worker_that_lost_its_run_mid_call_settles_the_call_alone(
    acme, tmp_path, messages_api, settings, transactional_db, store
):
    """Taken over while its call ran (the new worker reconciled first): the step is not
    journaled here, but the call was made, so its spend counts and nothing stays held."""
    _store(settings, store, acme)
    run = _run(acme)
    with tenant_scope(acme):
        _budget(acme, 10**10)
        windows = windows_for(tenant_id=acme.id, agent=run.agent.name, run_id=run.pk)
        gateway = gateway_for(run, tmp_path)
        Run.objects.filter(pk=run.pk).update(lease_owner="elsewhere:2")
        with pytest.raises(services.LeaseLost):  # the gateway stops the run on it
            gateway.handle("llm.messages", CALL)
        spent, held = gateway.budget.store.state(windows)[0]
        gateway.budget.flush()
        settle = LedgerEntry.objects.get(run_id=run.pk, entry="settle", kind="llm")
        assert spent == settle.amount_nusd > 0 and held == 0
        assert not JournalStep.objects.filter(run_id=run.pk).exists()
        assert not BudgetHold.objects.filter(run_id=run.pk).exists()


def test_a_run_given_up_after_too_many_lost_workers_gives_back_what_they_held(
    acme, messages_api, settings, transactional_db
):
    settings.BILLING_BUDGET_STORE = "database"
    run = _run(acme)
    with tenant_scope(acme):
        _budget(acme, 10**10)
        windows = windows_for(tenant_id=acme.id, agent=run.agent.name, run_id=run.pk)
        lost = _claim_and_lose(run, attempts=settings.EXECUTION_MAX_ATTEMPTS)
        services.run_execute(run_id=run.pk, worker_id="test-worker")
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED and "giving up" in run.error
        assert BudgetHook().store.state(windows)[0] == (0, 0)
        [row] = _released(run)
        assert row.reservation == lost.id
