"""Hard caps under concurrency: many managed runs of one tenant spend against one cap
through their real gateways (one thread per run, the real store, the local Messages
API), and a run through the whole worker path is stopped with reason `budget`."""

import threading

import pytest
from django.db import connection
from django.db.models import Sum

from billing.budgets import windows_for
from billing.models import Budget, LedgerEntry
from billing.store import get_store
from controlplane.tenancy import tenant_scope
from execution.models import Run, RunStatus, StopReason
from tests.billing.helpers import gateway_for
from tests.execution.bundles import agent_with_bundle, run_now

MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-4-5"\n'
NOOP = "def main(ctx, input):\n    return None\n"
RUNS = 50
CAP = 20_000_000  # $0.02: a few dozen calls, while each reserves about $0.001


def _drive(gateway, tenant, errors: list) -> None:
    try:
        with tenant_scope(tenant):
            for i in range(200):
                reply = gateway.handle(
                    "llm.messages",
                    {
                        "max_tokens": 64,
                        "messages": [{"role": "user", "content": f"run {gateway.run_id} call {i}"}],
                    },
                )
                # Back to the pool between calls, as the gateway does for busy agents.
                connection.close()
                if not reply["ok"]:
                    return
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(repr(exc))
    finally:
        with tenant_scope(tenant):
            gateway.budget.flush()  # as the run's supervisor does when it ends
        connection.close()


def _concurrent_runs_hold_the_cap(tenant, tmp_path):
    from controlplane.services import Actor
    from execution import services

    agent = agent_with_bundle(tenant, code=NOOP, manifest=MANIFEST)
    with tenant_scope(tenant):
        budget = Budget.objects.create(tenant=tenant, scope="tenant", period="day", cap_nusd=CAP)
        runs = [
            services.run_create(
                tenant=tenant,
                agent=agent,
                version=None,
                input=None,
                limits=None,
                actor=Actor.system(),
            )
            for _ in range(RUNS)
        ]
        gateways = [
            gateway_for(Run.objects.select_related("agent", "version").get(pk=r.pk), tmp_path)
            for r in runs
        ]
    errors: list = []
    threads = [threading.Thread(target=_drive, args=(g, tenant, errors)) for g in gateways]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors[:3]
    assert all(not t.is_alive() for t in threads)
    with tenant_scope(tenant):
        settles = LedgerEntry.objects.filter(entry="settle", kind="llm")
        settled = settles.aggregate(s=Sum("amount_nusd"))["s"]
        calls = settles.exclude(amount_nusd=0).count()
        reserved = LedgerEntry.objects.filter(entry="reserve").aggregate(s=Sum("amount_nusd"))["s"]
        released = LedgerEntry.objects.filter(entry="release").aggregate(s=Sum("amount_nusd"))["s"]
        windows = [
            w
            for w in windows_for(tenant_id=tenant.id, agent=agent.name, run_id=None)
            if w.budget_id == budget.pk
        ]
    spent, held = get_store().state(windows)[0]
    # Every reservation was at least the call's actual cost, so the cap held outright.
    assert calls > 10 and settled <= CAP
    assert spent == settled and held == 0 and reserved == settled + released
    # Every run went on until a call of it was refused, and stopped for the budget.
    assert {g.stop_reason for g in gateways} == {StopReason.BUDGET}


@pytest.mark.postgres
@pytest.mark.slow
def test_fifty_concurrent_runs_never_spend_past_a_cap_on_postgresql(
    transactional_db, acme, tmp_path, settings
):
    assert connection.vendor == "postgresql"
    settings.BILLING_BUDGET_STORE = "database"
    _concurrent_runs_hold_the_cap(acme, tmp_path)


@pytest.mark.redis
@pytest.mark.postgres  # the runs' own writes (journal, ledger) need a concurrent database
@pytest.mark.slow
def test_fifty_concurrent_runs_never_spend_past_a_cap_on_redis(
    transactional_db, acme, tmp_path, settings
):
    settings.BILLING_BUDGET_STORE = "redis"
    _concurrent_runs_hold_the_cap(acme, tmp_path)


@pytest.mark.slow
def test_a_managed_run_over_its_own_budget_is_stopped_for_the_budget(transactional_db, acme):
    code = (
        "def main(ctx, input):\n"
        "    for i in range(100):\n"
        "        ctx.llm.messages(max_tokens=200, messages=[{'role': 'user', 'content': f'q{i}'}])\n"
    )
    agent = agent_with_bundle(acme, code=code, manifest=MANIFEST + "[limits]\nbudget_usd = 0.01\n")
    run = run_now(acme, agent)
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.BUDGET)
    with tenant_scope(acme):
        budget = Budget.objects.get(run=run)
        settled = LedgerEntry.objects.filter(run=run, entry="settle").aggregate(
            s=Sum("amount_nusd")
        )["s"]
    assert budget.cap_nusd == 10_000_000 and 0 < settled <= budget.cap_nusd


def test_a_run_is_refused_with_402_naming_the_spent_budget(api, acme, make_key):
    agent = agent_with_bundle(acme, code=NOOP, manifest=MANIFEST)
    with tenant_scope(acme):
        budget = Budget.objects.create(
            tenant=acme, scope="agent", agent=agent.name, period="month", cap_nusd=1000
        )
        windows = windows_for(tenant_id=acme.id, agent=agent.name, run_id=None)
        get_store().settle(windows, 0, 1000)
    key = make_key(acme, "write", "read")
    resp = api.post("/api/v1/runs", key=key, json={"agent": agent.name})
    assert resp.status_code == 402
    assert (
        resp.json()["error"] == "budget_exceeded" and f"budget {budget.pk}" in resp.json()["detail"]
    )
    with tenant_scope(acme):
        assert not Run.objects.exists()
    ok = api.post("/api/v1/runs", key=key, json={"agent": agent.name, "budget_usd": "0.5"})
    assert ok.status_code == 402  # the agent's budget is still spent
    from billing.services import budget_delete
    from controlplane.services import Actor

    with tenant_scope(acme):
        budget_delete(budget=budget, actor=Actor.system())
    ok = api.post("/api/v1/runs", key=key, json={"agent": agent.name, "budget_usd": "0.5"})
    assert ok.status_code == 202
    cost = api.get(f"/api/v1/runs/{ok.json()['id']}/cost", key=key).json()
    assert cost["cost_usd"] == "0" and set(cost["by_kind"]) == {"llm", "tool", "sandbox", "storage"}
    with tenant_scope(acme):
        assert Budget.objects.get(run_id=ok.json()["id"]).cap_nusd == 500_000_000


def _history(turns=30) -> list:
    history = []
    for i in range(turns):
        history.append({"role": "user", "content": f"question {i} " + "x" * 200})
        history.append({"role": "assistant", "content": f"answer {i}"})
    return history


def _fit_gateway(tenant, tmp_path, *, budget_usd: float):
    agent = agent_with_bundle(tenant, code=NOOP, manifest=MANIFEST)
    from controlplane.services import Actor
    from execution import services

    with tenant_scope(tenant):
        run = services.run_create(
            tenant=tenant,
            agent=agent,
            version=None,
            input=None,
            limits={"budget_usd": budget_usd},
            actor=Actor.system(),
        )
        return gateway_for(Run.objects.select_related("agent", "version").get(pk=run.pk), tmp_path)


def test_a_context_fit_summary_is_reserved_and_settled_like_any_llm_call(
    acme, tmp_path, messages_api
):
    gateway = _fit_gateway(acme, tmp_path, budget_usd=1.0)
    with tenant_scope(acme):
        reply = gateway.handle("context.fit", {"messages": _history(), "budget_tokens": 1000})
        gateway.budget.flush()  # the ledger rows the hook holds back, as a run's end writes them
        entries = list(LedgerEntry.objects.filter(run_id=gateway.run_id).order_by("pk"))
        budget = Budget.objects.get(run_id=gateway.run_id)
    assert reply["ok"] and reply["result"]["summarised"] and messages_api.requests == 1
    reserve, settle, release = entries
    assert (reserve.entry, settle.entry, release.entry) == ("reserve", "settle", "release")
    assert {e.kind for e in entries} == {"llm"}
    # The worst case held the summary's max_tokens of output; the settlement is its cost.
    assert reserve.detail["max_tokens"] == 400 and reserve.detail["estimated_input_tokens"] > 1000
    assert 0 < settle.amount_nusd < reserve.amount_nusd
    assert settle.amount_nusd + release.amount_nusd == reserve.amount_nusd
    usage = reply["result"]["usage"]
    assert (settle.detail["input_tokens"], settle.detail["output_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    window = windows_for(tenant_id=acme.id, agent=gateway.hello["agent"], run_id=gateway.run_id)
    assert [w.budget_id for w in window] == [budget.pk]
    assert get_store().state(window) == [(settle.amount_nusd, 0)]
    # The summary is on the run's trace as a chat span, so reports price it too.
    (chat,) = [s for s in gateway.tracer.buffer.spans if s.name.startswith("chat ")]
    assert chat.attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]


def test_a_context_fit_summary_past_the_cap_is_refused_and_the_run_stops(
    acme, tmp_path, messages_api
):
    # $0.001 holds less than the summary's worst case (400 output tokens alone are $0.006).
    gateway = _fit_gateway(acme, tmp_path, budget_usd=0.001)
    with tenant_scope(acme):
        reply = gateway.handle("context.fit", {"messages": _history(), "budget_tokens": 1000})
        gateway.budget.flush()
        settled = LedgerEntry.objects.filter(run_id=gateway.run_id).exists()
    assert not reply["ok"] and gateway.stop_reason == StopReason.BUDGET
    assert messages_api.requests == 0 and not settled
