"""The ledger of a managed run: every call's settlement a line of its own, written in
batches (billing/hook.py) and whole by the time the run's outcome is."""

from decimal import Decimal

import pytest
from django.db.models import Sum

from billing import hook as hook_module
from billing.budgets import windows_for
from billing.hook import BudgetHook
from billing.models import Budget, BudgetWindow, LedgerEntry, UsageDaily
from billing.prices import platform_price, to_nusd
from billing.store import get_store
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.budget import BudgetRefused
from tests.execution.bundles import agent_with_bundle, run_now

MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-4-5"\ntools = ["echo"]\n'
CALLS = (
    "def main(ctx, input):\n"
    "    for i in range(3):\n"
    "        ctx.tool('echo', i=i)\n"
    "    ctx.llm.messages(max_tokens=50, messages=[{'role': 'user', 'content': 'hi'}])\n"
)


def _queued_run(tenant, agent):
    with tenant_scope(tenant):
        return services.run_create(
            tenant=tenant, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )


def test_a_runs_cost_is_its_calls_line_by_line_when_the_run_ends(
    api, acme, make_key, transactional_db
):
    agent = agent_with_bundle(acme, code=CALLS, manifest=MANIFEST)
    with tenant_scope(acme):
        Budget.objects.create(tenant=acme, scope="tenant", period="month", cap_nusd=10**12)
    run = run_now(acme, agent)
    assert run.status == "succeeded", run.error

    cost = api.get(f"/api/v1/runs/{run.pk}/cost", key=make_key(acme, "read")).json()
    kinds = [line["kind"] for line in cost["lines"]]
    assert sorted(kinds) == ["llm", "sandbox", "tool", "tool", "tool"]
    assert [line["tool"] for line in cost["lines"] if line["kind"] == "tool"] == ["echo"] * 3
    tool_price = to_nusd(platform_price("tool_call_usd"))
    assert tool_price > 0
    assert Decimal(cost["by_kind"]["tool"]) == Decimal(3 * tool_price) / 10**9
    assert Decimal(cost["cost_usd"]) == sum(Decimal(line["amount_usd"]) for line in cost["lines"])
    assert cost["reserved_usd"] == "0"  # every hold was settled or released
    with tenant_scope(acme):
        entries = LedgerEntry.objects.filter(run=run)
        # The LLM call and the sandbox are held, then settled; the tools, whose price
        # is their cost, are charged at once.
        assert entries.filter(entry="reserve").count() == 2
        assert entries.filter(entry="settle").count() == 5
        tools = UsageDaily.objects.filter(kind="tool", agent_name=agent.name)
        assert tools.aggregate(c=Sum("calls"), s=Sum("cost_nusd")) == {
            "c": 3,
            "s": 3 * tool_price,
        }


def test_the_hook_holds_ledger_rows_back_until_a_flush_a_full_batch_or_a_second(acme, monkeypatch):
    agent = agent_with_bundle(acme, code=CALLS, manifest=MANIFEST)
    run = _queued_run(acme, agent)
    hook = BudgetHook()
    with tenant_scope(acme):
        ledger = LedgerEntry.objects.filter(run=run)

        def call():
            held = hook.reserve(run_id=run.pk, kind="tool", request={"name": "echo"})
            hook.settle(reservation=held, usage={"called": True})

        call()
        assert ledger.count() == 0  # no budget applies: one settlement, held back
        hook.flush()
        assert list(ledger.values_list("entry", "kind")) == [("settle", "tool")]

        monkeypatch.setattr(hook_module, "FLUSH_ROWS", 3)
        call()
        call()
        assert ledger.count() == 1
        call()  # the third row held back fills the batch
        assert ledger.count() == 4

        monkeypatch.setattr(hook_module, "FLUSH_SECONDS", 0)
        call()  # held for no time at all
        assert ledger.count() == 5
        usage = UsageDaily.objects.get(kind="tool", agent_name=agent.name)
        assert usage.calls == 5 and usage.cost_nusd == 5 * to_nusd(platform_price("tool_call_usd"))


def test_a_window_row_deleted_under_the_process_cache_is_stored_again(acme, transactional_db):
    with tenant_scope(acme):
        budget = Budget.objects.create(tenant=acme, scope="tenant", period="day", cap_nusd=1000)
        windows = windows_for(tenant_id=acme.id, agent="any", run_id=None)
        store = get_store()
        store.reserve(windows, 400)
        BudgetWindow.objects.filter(budget=budget).delete()
        store.reserve(windows, 300)  # the cached window is gone: inserted, then held
        assert store.state(windows) == [(0, 300)]
        with pytest.raises(Exception, match="would be passed"):
            store.reserve(windows, 800)
        assert store.state(windows) == [(0, 300)]


@pytest.mark.parametrize("store", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_tool_call_is_charged_when_reserved_and_given_back_if_not_made(
    acme, settings, store, transactional_db
):
    settings.BILLING_BUDGET_STORE = store
    settings.REDIS_PREFIX = f"{settings.REDIS_PREFIX}charge-{acme.pk}:"
    price = to_nusd(platform_price("tool_call_usd"))
    agent = agent_with_bundle(acme, code=CALLS, manifest=MANIFEST)
    with tenant_scope(acme):
        Budget.objects.create(tenant=acme, scope="tenant", period="day", cap_nusd=2 * price)
    run = _queued_run(acme, agent)
    with tenant_scope(acme):
        windows = windows_for(tenant_id=acme.id, agent=agent.name, run_id=run.pk)
        hook = BudgetHook()
        made = hook.reserve(run_id=run.pk, kind="tool", request={"name": "echo"})
        assert hook.store.state(windows) == [(price, 0)]  # spent before the call is made
        assert hook.settle(reservation=made, usage={"called": True}) == price
        assert hook.store.state(windows) == [(price, 0)]
        not_made = hook.reserve(run_id=run.pk, kind="tool", request={"name": "echo"})
        with pytest.raises(BudgetRefused, match="would be passed"):
            hook.reserve(run_id=run.pk, kind="tool", request={"name": "echo"})
        assert hook.store.state(windows) == [(2 * price, 0)]
        assert hook.settle(reservation=not_made, usage={"called": False}) == 0
        assert hook.store.state(windows) == [(price, 0)]
        hook.flush()
        ledger = LedgerEntry.objects.filter(run=run).order_by("pk")
        assert list(ledger.values_list("entry", "amount_nusd")) == [
            ("settle", price),
            ("settle", 0),
        ]


def test_a_budget_changed_mid_run_applies_to_the_runs_next_call(acme, transactional_db):
    from billing.services import budget_update

    price = to_nusd(platform_price("tool_call_usd"))
    agent = agent_with_bundle(acme, code=CALLS, manifest=MANIFEST)
    with tenant_scope(acme):
        budget = Budget.objects.create(
            tenant=acme, scope="tenant", period="day", cap_nusd=10 * price
        )
    run = _queued_run(acme, agent)
    with tenant_scope(acme):
        hook = BudgetHook()
        hook.settle(
            reservation=hook.reserve(run_id=run.pk, kind="tool", request={"name": "echo"}),
            usage={"called": True},
        )
        budget_update(
            budget=budget, data={"cap_usd": str(Decimal(price) / 10**9)}, actor=Actor.system()
        )
        with pytest.raises(BudgetRefused, match=f"budget {budget.pk}"):
            hook.reserve(run_id=run.pk, kind="tool", request={"name": "echo"})
