"""The fail-open opt-out: with the budget store unreachable (Redis pointed at a port
nothing listens on), a fail-closed tenant's calls are refused and its run stops with
reason `budget`; a tenant that opted out goes ahead unheld, and the audit says so."""

import socket

import pytest

from billing import store
from billing.models import BillingAccount, Budget, LedgerEntry
from controlplane.models import AuditEvent
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services as execution_services
from execution.models import Run, StopReason
from tests.billing.helpers import gateway_for
from tests.execution.bundles import agent_with_bundle

pytestmark = pytest.mark.django_db

MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-4-5"\n'
NOOP = "def main(ctx, input):\n    return None\n"
CALL = {"max_tokens": 32, "messages": [{"role": "user", "content": "hello"}]}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def store_down(settings):
    """Call it to take the budget store away: Redis at a port nothing listens on."""

    def down():
        settings.BILLING_BUDGET_STORE = "redis"
        settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
        store._redis.cache_clear()

    yield down
    store._redis.cache_clear()


def _gateway_with_budget(tenant, tmp_path, store_down):
    """A run admitted with the store up, whose gateway then finds it down."""
    agent = agent_with_bundle(tenant, code=NOOP, manifest=MANIFEST)
    with tenant_scope(tenant):
        Budget.objects.create(tenant=tenant, scope="tenant", period="month", cap_nusd=10**9)
        run = execution_services.run_create(
            tenant=tenant, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        store_down()
        return gateway_for(Run.objects.select_related("agent", "version").get(pk=run.pk), tmp_path)


def _audited(tenant, action):
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(action=action).values("target_id", "data"))


def test_it_sets_fail_open_through_the_api_admin_only_and_audited(api, acme, globex, make_key):
    admin, reader = make_key(acme, "admin", "read"), make_key(acme, "read")
    assert api.get("/api/v1/budgets/settings", key=reader).json() == {"fail_open": False}
    denied = api.request("PUT", "/api/v1/budgets/settings", key=reader, json={"fail_open": True})
    assert denied.status_code == 403
    resp = api.request("PUT", "/api/v1/budgets/settings", key=admin, json={"fail_open": True})
    assert resp.status_code == 200 and resp.json() == {"fail_open": True}
    for body, field in [({"fail_open": "yes"}, "fail_open"), ({}, "fail_open"), ({"x": 1}, "x")]:
        bad = api.request("PUT", "/api/v1/budgets/settings", key=admin, json=body)
        assert bad.status_code == 400 and field in bad.json()["detail"], bad.text
    assert [a["data"] for a in _audited(acme, "billing.account")] == [
        {"before": {"fail_open": False}, "after": {"fail_open": True}}
    ]
    # Another tenant's setting is its own.
    other = make_key(globex, "read")
    assert api.get("/api/v1/budgets/settings", key=other).json() == {"fail_open": False}


def test_with_the_store_unreachable_a_fail_closed_tenant_is_refused(acme, store_down, tmp_path):
    gateway = _gateway_with_budget(acme, tmp_path, store_down)
    with tenant_scope(acme):
        reply = gateway.handle("llm.messages", dict(CALL))
        gateway.budget.flush()
    assert not reply["ok"] and gateway.stop_reason == StopReason.BUDGET
    assert [a["target_id"] for a in _audited(acme, "budget.store_refused")] == [str(gateway.run_id)]
    with tenant_scope(acme):
        assert not LedgerEntry.objects.filter(run_id=gateway.run_id).exists()


def test_with_the_store_unreachable_an_opted_out_tenant_goes_ahead_and_it_is_recorded(
    acme, store_down, tmp_path
):
    with tenant_scope(acme):
        BillingAccount.objects.create(tenant=acme, fail_open=True)
    gateway = _gateway_with_budget(acme, tmp_path, store_down)
    with tenant_scope(acme):
        replies = [gateway.handle("llm.messages", {**CALL, "system": str(i)}) for i in range(2)]
        gateway.budget.flush()  # the ledger rows the hook holds back, as a run's end writes them
    assert all(r["ok"] for r in replies) and not gateway.stop_reason
    # Each run's first unheld call is audited, with what it was; the ledger has both.
    audited = _audited(acme, "budget.unheld")
    assert audited == [
        {"target_id": str(gateway.run_id), "data": {"during": "llm", "store": "redis"}}
    ]
    with tenant_scope(acme):
        settles = list(LedgerEntry.objects.filter(run_id=gateway.run_id, entry="settle"))
    assert len(settles) == 2 and all(e.amount_nusd > 0 for e in settles)


def test_admission_and_the_budget_check_follow_the_same_choice(
    api, acme, globex, make_key, store_down
):
    with tenant_scope(globex):
        BillingAccount.objects.create(tenant=globex, fail_open=True)
    store_down()
    for tenant, allowed in ((acme, False), (globex, True)):
        agent = agent_with_bundle(tenant, code=NOOP, manifest=MANIFEST)
        with tenant_scope(tenant):
            Budget.objects.create(tenant=tenant, scope="tenant", period="month", cap_nusd=10**9)
        key = make_key(tenant, "write", "read")
        started = api.post("/api/v1/runs", key=key, json={"agent": agent.name})
        check = api.get(f"/api/v1/budgets/check?agent={agent.name}", key=key)
        if allowed:
            assert started.status_code == 202, started.text
            assert check.status_code == 200 and check.json()["allowed"] is True
            assert _audited(tenant, "budget.unheld")[0]["data"]["during"] == "admission"
        else:
            assert started.status_code == 402 and "cannot be reached" in started.json()["detail"]
            assert check.status_code == 503
