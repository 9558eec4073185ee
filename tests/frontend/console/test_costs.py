"""Costs page, Settings › Budgets and Settings › Prices: billing in the console."""

import json
from decimal import Decimal

import pytest

from billing import costs, services
from billing.models import BillingAccount, Budget, PriceBook, PriceOverride, StoragePriceOverride
from billing.prices import cache, storage_prices
from controlplane.models import AuditEvent
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from tests.billing.helpers import chat_attrs, one_call
from tests.factories import UserFactory
from tracing.models import Span

BUDGETS = "/t/acme/settings/budgets/"
MANIFEST = 'entrypoint = "agent:main"\nmodel = "claude-sonnet-5"\n'
PRICES = "/t/acme/settings/prices/"


@pytest.fixture(autouse=True)
def price_book(db):
    if not PriceBook.objects.exists():
        services.price_book_load_file(path=services.seed_path())


def _costed_calls(tenant, n=3):
    for i in range(n):
        one_call(tenant, attrs=chat_attrs(agent=f"agent-{i % 2}"))
    with tenant_scope(tenant):
        pairs = [(s.trace_id.hex, s.span_id_hex) for s in Span.objects.all()]
    costs.spans_cost(tenant_id=tenant.id, spans=pairs)


def test_the_costs_page_charts_spend_by_agent_and_model_from_static_files(client, acme):
    _costed_calls(acme)
    client.force_login(acme.owner)
    resp = client.get("/t/acme/costs/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert 'href="/t/acme/costs/" aria-current="page"' in html
    assert "frontend/chart-4.6.1.umd.min.js" in html and "frontend/costs.js" in html
    assert "<script>" not in html and " style=" not in html and "onclick" not in html
    start = html.index('id="chart-agent" data-series="') + len('id="chart-agent" data-series="')
    series = json.loads(html[start : html.index('"', start)].replace("&quot;", '"'))
    assert {s["name"] for s in series["series"]} == {"agent-0", "agent-1"}
    assert round(sum(sum(s["values"]) for s in series["series"]), 6) == 0.005292
    assert 'id="top-traces"' in html and "$0.001764" in html


def test_budgets_show_as_bars_and_admins_add_and_delete_them_audited(client, acme, acme_viewer):
    with tenant_scope(acme):
        Budget.objects.create(tenant=acme, scope="tenant", period="month", cap_nusd=10_000_000)
    _costed_calls(acme)
    client.force_login(acme.owner)
    html = client.get(BUDGETS).content.decode()
    assert '<meter min="0" max="0.01" low="0.005" high="0.01"' in html
    assert "$0.005292 of $0.01 (53 %)" in html
    resp = client.post(
        BUDGETS,
        {
            "scope": "agent",
            "agent": "support",
            "period": "day",
            "cap_usd": "5",
            "thresholds": "0.5, 0.9",
        },
        follow=True,
    )
    assert "holds from now on" in resp.content.decode()
    with tenant_scope(acme):
        added = Budget.objects.get(scope="agent")
    assert added.thresholds == [0.5, 0.9] and added.cap_nusd == 5_000_000_000
    client.post(f"{BUDGETS}{added.pk}/delete")
    assert not Budget.all_tenants.filter(pk=added.pk).exists()
    actions = set(AuditEvent.all_tenants.filter(tenant=acme).values_list("action", flat=True))
    assert {"budget.create", "budget.delete"} <= actions
    client.force_login(acme_viewer)
    assert client.post(BUDGETS, {"scope": "tenant", "cap_usd": "1"}).status_code == 403


def test_admins_choose_fail_open_on_the_budgets_page_audited(client, acme, acme_viewer):
    client.force_login(acme.owner)
    html = client.get(BUDGETS).content.decode()
    assert 'name="fail_open"' in html and 'id="id_fail_open" checked' not in html
    resp = client.post(f"{BUDGETS}store", {"fail_open": "on"}, follow=True)
    assert "Calls go ahead unheld" in resp.content.decode()
    assert BillingAccount.all_tenants.get(tenant=acme).fail_open is True
    client.post(f"{BUDGETS}store", {})
    assert BillingAccount.all_tenants.get(tenant=acme).fail_open is False
    audited = AuditEvent.all_tenants.filter(tenant=acme, action="billing.account")
    assert [e.data["after"]["fail_open"] for e in audited.order_by("pk")] == [True, False]
    client.force_login(acme_viewer)
    assert "Calls are refused (fail closed)" in client.get(BUDGETS).content.decode()
    assert client.post(f"{BUDGETS}store", {"fail_open": "on"}).status_code == 403
    assert BillingAccount.all_tenants.get(tenant=acme).fail_open is False


def test_platform_staff_see_every_tenants_budgets_in_the_admin(client, acme, globex):
    with tenant_scope(acme):
        ours = Budget.objects.create(tenant=acme, scope="tenant", cap_nusd=7_000_000_000)
    with tenant_scope(globex):
        theirs = Budget.objects.create(tenant=globex, scope="agent", agent="bot", cap_nusd=10**9)
    client.force_login(acme.owner)  # a tenant's owner is not platform staff
    assert client.get("/admin/billing/budget/").status_code == 302
    client.force_login(
        UserFactory(username="ops@flightdeck.test", is_staff=True, is_superuser=True)
    )
    html = client.get("/admin/billing/budget/").content.decode()
    for budget in (ours, theirs):
        assert f"/admin/billing/budget/{budget.pk}/change/" in html
    assert ">acme<" in html.replace("Acme", "acme") and "globex" in html.lower()
    assert "7" in html and ">0<" in html  # the cap and this period's spend
    page = client.get(f"/admin/billing/budget/{theirs.pk}/change/")
    assert page.status_code == 200 and "bot" in page.content.decode()
    # Staff set a tenant's fail-open through the service, so it is audited.
    resp = client.post(
        "/admin/billing/billingaccount/add/", {"tenant": globex.pk, "fail_open": "on"}
    )
    assert resp.status_code == 302
    assert BillingAccount.all_tenants.get(tenant=globex).fail_open is True
    assert AuditEvent.all_tenants.filter(tenant=globex, action="billing.account").exists()


def test_a_bad_budget_comes_back_with_the_message_on_its_field(client, acme):
    client.force_login(acme.owner)
    resp = client.post(
        BUDGETS,
        {"scope": "agent", "agent": "", "period": "month", "cap_usd": "5", "thresholds": "0.5"},
    )
    assert resp.status_code == 400 and "is required for an agent budget" in resp.content.decode()


def test_another_tenants_budget_cannot_be_deleted(client, acme, globex):
    with tenant_scope(globex):
        theirs = Budget.objects.create(tenant=globex, scope="tenant", cap_nusd=1)
    client.force_login(acme.owner)
    assert client.post(f"{BUDGETS}{theirs.pk}/delete").status_code == 404
    assert Budget.all_tenants.filter(pk=theirs.pk).exists()


def test_admins_set_a_tenant_price_for_a_model(client, acme):
    client.force_login(acme.owner)
    html = client.get(PRICES).content.decode()
    assert 'data-model="claude-sonnet-4"' in html
    resp = client.post(
        PRICES,
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "input_usd_per_mtok": "2",
            "output_usd_per_mtok": "10",
            "cache_read_usd_per_mtok": "0",
            "cache_write_usd_per_mtok": "0",
        },
        follow=True,
    )
    assert "is priced for this tenant" in resp.content.decode()
    override = PriceOverride.all_tenants.get(tenant=acme)
    assert (override.model, str(override.input_usd_per_mtok.normalize())) == (
        "claude-sonnet-4",
        "2",
    )
    assert AuditEvent.all_tenants.filter(tenant=acme, action="prices.override").exists()


def test_trace_list_and_view_show_costs(client, acme):
    _costed_calls(acme, n=1)
    client.force_login(acme.owner)
    html = client.get("/t/acme/traces/").content.decode()
    assert "$0.001764" in html
    with tenant_scope(acme):
        trace_id = Span.objects.get().trace_id.hex
    view = client.get(f"/t/acme/traces/{trace_id}/").content.decode()
    assert 'class="mono cost">$0.001764' in view  # the trace's total
    assert '<span class="row-cost">$0.001764</span>' in view  # the span's, in the tree


def test_the_run_list_and_the_run_page_show_each_runs_cost(client, acme):
    from billing.hook import BudgetHook
    from execution.services import run_create
    from tests.execution.bundles import agent_with_bundle

    agent = agent_with_bundle(
        acme, code="def main(ctx, input):\n    return None\n", manifest=MANIFEST
    )
    with tenant_scope(acme):
        run = run_create(
            tenant=acme, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        idle = run_create(
            tenant=acme, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        # One call through the gateway's hook: 1,000 in and 100 out at claude-sonnet-5's
        # $2 / $10 per million.
        hook = BudgetHook()
        request = {"model": "claude-sonnet-5", "max_tokens": 100, "messages": [{"role": "user"}]}
        held = hook.reserve(run_id=run.pk, request=request)
        hook.settle(reservation=held, usage={"input_tokens": 1000, "output_tokens": 100})
        hook.flush()  # as the run's end does
    client.force_login(acme.owner)
    html = client.get("/t/acme/runs/").content.decode()
    assert '<th class="num">Cost</th>' in html
    row = html[html.index(f'data-run="{run.pk}"') :]
    assert '<td class="num mono cost">$0.003</td>' in row[: row.index("</tr>")]
    other = html[html.index(f'data-run="{idle.pk}"') :]
    assert '<td class="num mono cost">$0</td>' in other[: other.index("</tr>")]
    page = client.get(f"/t/acme/runs/{run.pk}/").content.decode()
    assert f'href="/api/v1/runs/{run.pk}/cost"' in page and "$0.003</a>" in page


def test_services_used_by_the_pages_refuse_bad_prices(acme):
    with tenant_scope(acme), pytest.raises(services.FieldError, match="entries\\[0\\].model"):
        services.price_overrides_set(
            tenant=acme,
            actor=Actor.system(),
            entries=[
                {"provider": "x", "model": " ", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}
            ],
        )


def test_admins_set_the_tenants_storage_prices_through_the_audited_service(client, acme, globex):
    client.force_login(acme.owner)
    html = client.get(PRICES).content.decode()
    assert 'id="set-storage-prices"' in html
    resp = client.post(
        f"{PRICES}storage/", {"GLACIER_IR": "0.002", "database": "0.2", "STANDARD": ""}, follow=True
    )
    assert "storage prices are set" in resp.content.decode()
    own = dict(
        StoragePriceOverride.all_tenants.filter(tenant=acme).values_list("place", "gb_month_usd")
    )
    assert {k: str(v.normalize()) for k, v in own.items()} == {
        "GLACIER_IR": "0.002",
        "database": "0.2",
    }
    assert not StoragePriceOverride.all_tenants.filter(tenant=globex).exists()
    event = AuditEvent.all_tenants.get(tenant=acme, action="prices.storage")
    assert event.data["after"] == {"GLACIER_IR": "0.002", "database": "0.2"}
    # Billing and the API charge what the form set; the blank place keeps the book's.
    cache.clear()
    assert storage_prices(tenant_id=acme.id)["GLACIER_IR"] == Decimal("0.002")
    assert storage_prices(tenant_id=acme.id)["STANDARD"] == Decimal("0.023")
    page = client.get(PRICES).content.decode()
    assert 'name="GLACIER_IR" value="0.002' in page

    # A negative price is refused on its field, and nothing changes.
    bad = client.post(f"{PRICES}storage/", {"STANDARD": "-1"})
    assert bad.status_code == 400 and "greater than or equal to 0" in bad.content.decode()
    assert StoragePriceOverride.all_tenants.filter(tenant=acme).count() == 2


def test_a_viewer_cannot_set_storage_prices(client, acme, acme_viewer):
    client.force_login(acme_viewer)
    assert 'id="set-storage-prices"' not in client.get(PRICES).content.decode()
    assert client.post(f"{PRICES}storage/", {"STANDARD": "0"}).status_code == 403
    assert not StoragePriceOverride.all_tenants.filter(tenant=acme).exists()
