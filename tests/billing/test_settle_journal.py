"""An LLM call's settlement commits with its journal step: on the database store in
the same transaction, on Redis with the ledger row in that transaction and the Lua
script after it, a worker's death in between reconciled when the run is taken up."""

import pytest
from django.db import DatabaseError

from billing.budgets import windows_for
from billing.hook import BudgetHook
from billing.models import Budget, LedgerEntry
from billing.store import RedisStore
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.models import Run
from replay.models import JournalStep
from tests.billing.helpers import gateway_for
from tests.execution.bundles import agent_with_bundle

MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-4-5"\n'
NOOP = "def main(ctx, input):\n    return None\n"
CALL = {"max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}


class WorkerDied(BaseException):
    """The worker's process ending at that point: nothing after it runs."""


def _gateway(tenant, tmp_path):
    agent = agent_with_bundle(tenant, code=NOOP, manifest=MANIFEST)
    with tenant_scope(tenant):
        Budget.objects.create(tenant=tenant, scope="tenant", period="day", cap_nusd=10**10)
        run = services.run_create(
            tenant=tenant, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        run = Run.objects.select_related("agent", "version").get(pk=run.pk)
        windows = windows_for(tenant_id=tenant.id, agent=agent.name, run_id=run.pk)
        return gateway_for(run, tmp_path), windows


def _settles(run_id):
    return LedgerEntry.objects.filter(run_id=run_id, entry="settle", kind="llm")


def test_it_settles_an_llm_call_in_its_journal_steps_transaction(
    acme, tmp_path, messages_api, settings, monkeypatch, transactional_db
):
    settings.BILLING_BUDGET_STORE = "database"
    gateway, windows = _gateway(acme, tmp_path)
    with tenant_scope(acme):
        assert gateway.handle("llm.messages", CALL)["ok"]
        spent, held = gateway.budget.store.state(windows)[0]
        settle = _settles(gateway.run_id).get()
        # The ledger's lines of the call are written with its step, not held back.
        assert spent == settle.amount_nusd > 0 and held == 0
        assert JournalStep.objects.filter(run_id=gateway.run_id).count() == 1

        # The window's UPDATE fails after the step's INSERT: neither is committed.
        real = type(gateway.budget.store).settle

        def failing(self, *args, joined=False, **kwargs):
            real(self, *args, joined=joined, **kwargs)
            raise DatabaseError("the server went away")

        monkeypatch.setattr(type(gateway.budget.store), "settle", failing)
        with pytest.raises(DatabaseError):
            gateway.handle("llm.messages", {**CALL, "max_tokens": 65})
        assert JournalStep.objects.filter(run_id=gateway.run_id).count() == 1
        assert _settles(gateway.run_id).count() == 1
        assert gateway.budget.store.state(windows)[0][0] == spent


@pytest.mark.redis
def test_on_redis_a_death_between_journal_and_settlement_is_reconciled_from_the_ledger(
    acme, tmp_path, messages_api, settings, monkeypatch, transactional_db
):
    settings.BILLING_BUDGET_STORE = "redis"
    settings.REDIS_PREFIX = f"{settings.REDIS_PREFIX}reconcile-{acme.pk}:"
    gateway, windows = _gateway(acme, tmp_path)
    store = gateway.budget.store
    real = RedisStore.settle

    def dies(self, *args, **kwargs):
        raise WorkerDied

    with tenant_scope(acme):
        monkeypatch.setattr(RedisStore, "settle", dies)
        with pytest.raises(WorkerDied):
            gateway.handle("llm.messages", CALL)
        monkeypatch.setattr(RedisStore, "settle", real)
        # Committed: the step and its settlement's ledger rows; the window still holds.
        assert JournalStep.objects.filter(run_id=gateway.run_id, done=True).count() == 1
        settle = _settles(gateway.run_id).get()
        reserve = LedgerEntry.objects.get(run_id=gateway.run_id, entry="reserve")
        assert store.state(windows)[0] == (0, reserve.amount_nusd)

        # A second call reserved, then the worker died while it was being made.
        lost = gateway.budget.reserve(
            run_id=gateway.run_id, request={"model": "claude-sonnet-4-5", **CALL}
        )
        assert store.state(windows)[0] == (0, reserve.amount_nusd + lost.amount_nusd)

        # Taken up again: the first settled from its ledger row, the second given back.
        hook = BudgetHook()
        hook.reconcile(run_id=gateway.run_id)
        assert store.state(windows)[0] == (settle.amount_nusd, 0)
        released = LedgerEntry.objects.get(reservation=lost.id, entry="release")
        assert released.amount_nusd == lost.amount_nusd and released.detail["reconciled"]
        hook.reconcile(run_id=gateway.run_id)  # twice changes nothing
        assert store.state(windows)[0] == (settle.amount_nusd, 0)

        # The lost worker's call answered after all: its spend counts, its hold is gone.
        gateway.budget.settle(reservation=lost, usage={"input_tokens": 10, "output_tokens": 5})
        gateway.budget.settle(reservation=lost, usage={"input_tokens": 10, "output_tokens": 5})
        late = lost.price.cost_nusd(input_tokens=10, output_tokens=5, cache_read=0, cache_write=0)
        assert store.state(windows)[0] == (settle.amount_nusd + late, 0)
