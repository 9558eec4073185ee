"""Storage is priced by where the bytes sit: database rows, hot payload objects and warm
bundles in S3 STANDARD, cold bundles in the class they were moved to; the storage API
and the console show each tier's cost at the tenant's prices, the prices billing
charges."""

import calendar
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services
from billing.models import LedgerEntry, PriceBook, StoragePriceOverride, UsageDaily
from billing.prices import cache, to_nusd
from billing.storage import storage_month_usd
from controlplane.blobstore import get_blob_store, tenant_key
from controlplane.models import AuditEvent
from controlplane.tenancy import tenant_scope
from execution.models import Run
from execution.testing import agent_with_bundle, make_bundle
from tests.retention.helpers import POLICY, age, apply, send_trace, tier_of
from tracing.models import Trace
from tracing.retention.models import StorageUsage, Tier

pytestmark = pytest.mark.django_db(transaction=True)

# Prices far apart, so a byte charged at the wrong place's price shows in the total.
PRICES = {
    "storage_database_gb_month_usd": "1",
    "storage_standard_gb_month_usd": "10",
    "storage_standard_ia_gb_month_usd": "100",
    "storage_glacier_ir_gb_month_usd": "1000",
}
MODEL = {
    "provider": "acme-ai",
    "model": "m1",
    "input_usd_per_mtok": "1",
    "output_usd_per_mtok": "1",
}


@pytest.fixture
def spread_prices():
    services.price_book_load(data={"source": "test", "platform": PRICES, "models": [MODEL]})
    cache.clear()


def usage_by_tier(tenant) -> dict[int, StorageUsage]:
    return {row.tier: row for row in StorageUsage.all_tenants.filter(tenant=tenant)}


def day_cost(tenant, when) -> int:
    return UsageDaily.all_tenants.get(tenant=tenant, kind="storage", day=when.date()).cost_nusd


def expected(rows: dict, *, cold_price: str, when) -> int:
    db = sum(row.db_bytes for row in rows.values())
    standard = rows[Tier.HOT].blob_bytes + rows[Tier.WARM].blob_bytes
    month = (
        Decimal(db) * Decimal(PRICES["storage_database_gb_month_usd"])
        + Decimal(standard) * Decimal(PRICES["storage_standard_gb_month_usd"])
        + Decimal(rows[Tier.COLD].blob_bytes) * Decimal(cold_price)
    ) / Decimal(10**9)
    return to_nusd(month / calendar.monthrange(when.year, when.month)[1])


def set_policy(api, key):
    response = api.request("PUT", "/api/v1/retention", key=key, json=POLICY)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("cold_class", ["GLACIER_IR", "STANDARD_IA"])
def test_it_charges_each_tier_its_storage_class_price(
    api, acme, make_key, settings, spread_prices, cold_class
):
    settings.RETENTION_COLD_STORAGE_CLASS = cold_class
    cold_price = PRICES[f"storage_{cold_class.lower()}_gb_month_usd"]
    key = make_key(acme, "admin", "read")
    set_policy(api, key)
    warm, cold = send_trace(acme, session="warm"), send_trace(acme, session="cold")
    # Sent a day apart: the first is warm while the second is cold, read on the same day.

    age(acme, cold, days=2)
    apply(acme, days_ahead=1.5)
    assert (tier_of(acme, warm), tier_of(acme, cold)) == (Tier.WARM, Tier.COLD)
    when = timezone.now() + timedelta(days=1.5)
    rows = usage_by_tier(acme)
    assert rows[Tier.WARM].blob_bytes > 0 and rows[Tier.COLD].blob_bytes > 0
    assert day_cost(acme, when) == expected(rows, cold_price=cold_price, when=when)

    # The tenant's report prices the day's storage the same.
    day = when.date().isoformat()
    report = api.get(f"/api/v1/usage?from={day}&to={day}&group_by=kind", key=key).json()
    storage = next(line for line in report["items"] if line["kind"] == "storage")
    assert Decimal(storage["cost_usd"]) * 10**9 == day_cost(acme, when)


def test_a_cold_bundle_costs_less_than_the_same_bundle_warm(api, acme, make_key, spread_prices):
    key = make_key(acme, "admin")
    set_policy(api, key)
    trace = send_trace(acme)
    apply(acme, days_ahead=1.5)
    warm_when = timezone.now() + timedelta(days=1.5)
    warm_rows, warm_cost = usage_by_tier(acme), day_cost(acme, warm_when)
    apply(acme, days_ahead=4)
    assert tier_of(acme, trace) == Tier.COLD
    cold_when = timezone.now() + timedelta(days=4)
    cold_rows = usage_by_tier(acme)
    assert cold_rows[Tier.COLD].blob_bytes == warm_rows[Tier.WARM].blob_bytes
    assert day_cost(acme, cold_when) == expected(cold_rows, cold_price="1000", when=cold_when)
    assert expected(warm_rows, cold_price="1000", when=warm_when) == warm_cost


def test_the_price_book_lists_a_storage_price_per_class(api, acme, make_key):
    body = api.get("/api/v1/prices", key=make_key(acme, "read")).json()
    # The seed's AWS us-east-1 list prices (billing/prices/2026-12-02.json).
    assert {k: v for k, v in body["platform"].items() if k.startswith("storage_")} == {
        "storage_database_gb_month_usd": "0.115",
        "storage_standard_gb_month_usd": "0.023",
        "storage_standard_ia_gb_month_usd": "0.0125",
        "storage_glacier_ir_gb_month_usd": "0.004",
    }
    assert storage_month_usd(tenant_id=acme.id, stored={"GLACIER_IR": 10**9}) == Decimal("0.004")
    with pytest.raises(ValueError, match="DEEP_ARCHIVE"):
        storage_month_usd(tenant_id=acme.id, stored={"DEEP_ARCHIVE": 1})


def test_an_older_book_with_one_storage_price_charges_it_everywhere(acme):
    book = services.price_book_load(
        data={"source": "old", "platform": {"storage_gb_month_usd": "0.05"}, "models": [MODEL]}
    )
    assert {
        book.storage_database_gb_month_usd,
        book.storage_standard_gb_month_usd,
        book.storage_standard_ia_gb_month_usd,
        book.storage_glacier_ir_gb_month_usd,
    } == {Decimal("0.05")}
    assert PriceBook.objects.order_by("-version").first() == book


def month_nusd(size: int, price: str) -> int:
    return to_nusd(Decimal(size) * Decimal(price) / Decimal(10**9))


def storage_of(api, key) -> dict[str, dict]:
    response = api.get("/api/v1/storage", key=key)
    assert response.status_code == 200, response.text
    return {row["tier"]: row for row in response.json()}


def warm_and_cold(api, tenant, key):
    """A hot, a warm and a cold trace of the tenant, counted on a day 1.5 days ahead.

    The hot one starts 1.5 days ahead, so it and its payload rows stay hot on that day:
    without it the hot tier held only payload rows not yet swept, and whether they were
    depended on the hour the test ran (it failed after noon UTC)."""
    set_policy(api, key)
    hot, warm = send_trace(tenant, session="hot"), send_trace(tenant, session="warm")
    cold = send_trace(tenant, session="cold")
    age(tenant, hot, days=-1.5)
    age(tenant, cold, days=2)
    apply(tenant, days_ahead=1.5)
    tiers = tier_of(tenant, hot), tier_of(tenant, warm), tier_of(tenant, cold)
    assert tiers == (Tier.HOT, Tier.WARM, Tier.COLD)
    return timezone.now() + timedelta(days=1.5)


def test_the_storage_api_prices_each_tier_where_its_bytes_sit(api, acme, make_key, spread_prices):
    key = make_key(acme, "admin", "read")
    when = warm_and_cold(api, acme, key)
    storage, rows = storage_of(api, key), usage_by_tier(acme)
    for tier, name, blob_place in (
        (Tier.HOT, "hot", "STANDARD"),
        (Tier.WARM, "warm", "STANDARD"),
        (Tier.COLD, "cold", "GLACIER_IR"),
    ):
        row, counted = storage[name], rows[tier]
        assert (row["db_bytes"], row["blob_bytes"]) == (counted.db_bytes, counted.blob_bytes)
        places = {p["place"]: p for p in row["places"]}
        db_price = PRICES["storage_database_gb_month_usd"]
        assert places["database"]["bytes"] == counted.db_bytes > 0
        assert places["database"]["usd_per_gb_month"] == db_price
        db_cost = month_nusd(counted.db_bytes, db_price)
        assert Decimal(row["db_cost_usd_month"]) * 10**9 == db_cost
        blob_price = PRICES[f"storage_{blob_place.lower()}_gb_month_usd"]
        if counted.blob_bytes:
            assert set(places) == {"database", blob_place}
            assert places[blob_place]["bytes"] == counted.blob_bytes
            assert places[blob_place]["usd_per_gb_month"] == blob_price
        blob_cost = month_nusd(counted.blob_bytes, blob_price)
        assert Decimal(row["blob_cost_usd_month"]) * 10**9 == blob_cost
        assert Decimal(row["cost_usd_month"]) * 10**9 == db_cost + blob_cost
    # A cold bundle costs its class's price: the same bytes warm would cost 100 times less
    # at these prices, so the cold tier's blob cost is not STANDARD's.
    cold = storage["cold"]
    assert Decimal(cold["blob_cost_usd_month"]) * 10**9 == month_nusd(cold["blob_bytes"], "1000")

    # Billing charges the day's share of the same month: the tiers' costs summed, over
    # the month's days (rounded once per tier here, once in all there).
    month = sum(Decimal(row["cost_usd_month"]) for row in storage.values()) * 10**9
    days = calendar.monthrange(when.year, when.month)[1]
    assert abs(day_cost(acme, when) - month / days) <= 1


def test_a_tenants_own_storage_prices_are_shown_and_charged_and_no_one_elses(
    api, client, acme, globex, make_key, spread_prices
):
    key, other = make_key(acme, "admin", "read"), make_key(globex, "admin", "read")
    own = {"GLACIER_IR": "2000", "database": "3"}
    response = api.request("PUT", "/api/v1/prices", key=key, json={"storage": own})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["storage_overrides"] == own
    assert body["platform"]["storage_glacier_ir_gb_month_usd"] == "2000"
    assert body["platform"]["storage_standard_gb_month_usd"] == "10"  # the book's
    assert AuditEvent.all_tenants.filter(tenant=acme, action="prices.storage").exists()
    # Setting the model overrides alone keeps the storage prices.
    assert api.request("PUT", "/api/v1/prices", key=key, json={"entries": []}).status_code == 200
    assert api.get("/api/v1/prices", key=key).json()["storage_overrides"] == own
    theirs = api.get("/api/v1/prices", key=other).json()
    assert theirs["storage_overrides"] == {}
    assert theirs["platform"]["storage_glacier_ir_gb_month_usd"] == "1000"

    when = warm_and_cold(api, acme, key)
    warm_and_cold(api, globex, other)
    mine, rows = storage_of(api, key), usage_by_tier(acme)
    cold = {p["place"]: p for p in mine["cold"]["places"]}
    assert cold["GLACIER_IR"]["usd_per_gb_month"] == "2000"
    assert cold["database"]["usd_per_gb_month"] == "3"
    assert Decimal(mine["cold"]["blob_cost_usd_month"]) * 10**9 == month_nusd(
        rows[Tier.COLD].blob_bytes, "2000"
    )
    db = sum(row.db_bytes for row in rows.values())
    standard = rows[Tier.HOT].blob_bytes + rows[Tier.WARM].blob_bytes
    month = (
        Decimal(db) * 3 + Decimal(standard) * 10 + Decimal(rows[Tier.COLD].blob_bytes) * 2000
    ) / Decimal(10**9)
    days = calendar.monthrange(when.year, when.month)[1]
    assert day_cost(acme, when) == to_nusd(month / days)

    # The other tenant is charged the book's prices, in the API and by billing.
    their_rows = usage_by_tier(globex)
    their_cold = {p["place"]: p for p in storage_of(api, other)["cold"]["places"]}
    assert their_cold["GLACIER_IR"]["usd_per_gb_month"] == "1000"
    assert day_cost(globex, when) == expected(their_rows, cold_price="1000", when=when)

    # The console's storage card shows the tier's cost at the tenant's prices.
    client.force_login(acme.owner)
    page = client.get(f"/t/{acme.slug}/settings/retention/").content.decode()
    card = page[page.index('id="retention-storage"') :]
    cold_row = card[
        card.index('data-tier="cold"') : card.index("</tr>", card.index('data-tier="cold"'))
    ]
    assert f"${mine['cold']['cost_usd_month']}" in cold_row
    assert f"${mine['cold']['blob_cost_usd_month']}" in cold_row
    assert "GLACIER_IR at $2000/GB-month" in cold_row


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"storage": {"DEEP_ARCHIVE": "1"}}, "storage.DEEP_ARCHIVE"),
        ({"storage": {"GLACIER_IR": "-1"}}, "storage.GLACIER_IR"),
        ({"storage": {"GLACIER_IR": "cheap"}}, "storage.GLACIER_IR"),
        ({"storage": ["GLACIER_IR"]}, "storage"),
        ({"storage": None}, "storage"),
        ({"colour": "blue"}, "colour"),
        ({}, "entries"),
    ],
)
def test_a_bad_storage_price_is_a_400_naming_the_field(api, acme, make_key, body, field):
    response = api.request("PUT", "/api/v1/prices", key=make_key(acme, "admin"), json=body)
    assert response.status_code == 400, response.text
    assert field in response.text
    assert not StoragePriceOverride.all_tenants.filter(tenant=acme).exists()


def upload_bundle(api, key, agent: str, data: bytes) -> dict:
    created = api.post("/api/v1/agents", key=key, json={"name": agent})
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    response = api.post(
        f"/api/v1/agents/{agent_id}/versions", key=key, files={"bundle": ("b.tar.gz", data)}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_agent_bundles_are_the_hot_tiers_blob_bytes_counted_on_upload(
    api, acme, globex, make_key, spread_prices
):
    key = make_key(acme, "admin", "read", "write")
    send_trace(acme)
    apply(acme)
    before = usage_by_tier(acme)[Tier.HOT].blob_bytes
    data = make_bundle(
        {
            "flightdeck.toml": 'entrypoint = "agent:main"\n',
            "agent.py": "def main(ctx, input):\n    return input\n",
        }
    )
    upload_bundle(api, key, "one", data)
    # The same archive as a second agent's version is the same object, stored once.
    upload_bundle(api, key, "two", data)

    store = get_blob_store()
    listed = dict(store.sizes(tenant_key(acme.id, "bundles") + "/"))
    assert list(listed.values()) == [len(data)]
    hot = storage_of(api, key)["hot"]
    assert hot["blob_bytes"] == before + len(data)
    places = {p["place"]: p["bytes"] for p in hot["places"]}
    assert places["STANDARD"] == hot["blob_bytes"]
    # Billed at STANDARD's price from the day of the upload.
    now = timezone.now()
    assert day_cost(acme, now) == expected(usage_by_tier(acme), cold_price="1000", when=now)

    # A retention run's recount keeps them, and another tenant's figures have none.
    apply(acme)
    assert usage_by_tier(acme)[Tier.HOT].blob_bytes == before + len(data)
    assert not StorageUsage.all_tenants.filter(tenant=globex, blob_bytes__gt=0).exists()


def run_of(tenant, hex_id: str) -> Run:
    """A managed run of the tenant whose trace is `hex_id`."""
    agent = agent_with_bundle(tenant, name="echo", code="def main(ctx, input):\n    return 1\n")
    with tenant_scope(tenant):
        version = agent.versions.get()
        return Run.objects.create(
            tenant=tenant, agent=agent, version=version, status="succeeded", trace_id=hex_id
        )


def test_a_runs_storage_cost_is_its_traces_part_of_the_tenants_day(
    api, acme, make_key, spread_prices
):
    key = make_key(acme, "admin", "read", "write")
    set_policy(api, key)
    trace, other = send_trace(acme, session="run"), send_trace(acme, session="not a run")
    run = run_of(acme, trace)

    def storage_line(when):
        body = api.get(f"/api/v1/runs/{run.pk}/cost", key=key).json()
        lines = [line for line in body["lines"] if line["kind"] == "storage"]
        day = when.date().isoformat()
        return body, next(line for line in lines if line["day"] == day)

    apply(acme)  # hot: its row and span rows, in the database
    now = timezone.now()
    body, line = storage_line(now)
    assert set(line["bytes"]) == {"database"} and line["bytes"]["database"] > 0
    days = calendar.monthrange(now.year, now.month)[1]
    assert Decimal(line["amount_usd"]) * 10**9 == to_nusd(
        Decimal(line["bytes"]["database"])
        * Decimal(PRICES["storage_database_gb_month_usd"])
        / Decimal(10**9)
        / days
    )
    assert line["usd_per_gb_month"] == {"database": PRICES["storage_database_gb_month_usd"]}
    assert Decimal(body["by_kind"]["storage"]) == Decimal(line["amount_usd"])
    # A part of the tenant's day, not added to it: the day's storage is still one row,
    # the tenant's bytes priced once, and the run's bytes are some of them.
    rows = usage_by_tier(acme)
    assert line["bytes"]["database"] < sum(row.db_bytes for row in rows.values())
    assert day_cost(acme, now) == expected(rows, cold_price="1000", when=now)
    assert UsageDaily.all_tenants.filter(tenant=acme, kind="storage").count() == 1
    # Counted again the same day, the line is rewritten, not added to.
    apply(acme)
    assert api.get(f"/api/v1/runs/{run.pk}/cost", key=key).json()["by_kind"] == body["by_kind"]

    # Warm, the run pays for its bundle at STANDARD's price from that day.
    apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.WARM
    when = timezone.now() + timedelta(days=1.5)
    body, warm = storage_line(when)
    archive = Trace.all_tenants.get(tenant=acme, trace_id=trace).archive
    assert warm["bytes"]["STANDARD"] == archive["bytes"]
    month_days = calendar.monthrange(when.year, when.month)[1]
    month = Decimal(warm["bytes"]["database"]) * Decimal(
        PRICES["storage_database_gb_month_usd"]
    ) + Decimal(archive["bytes"]) * Decimal(PRICES["storage_standard_gb_month_usd"])
    assert Decimal(warm["amount_usd"]) * 10**9 == to_nusd(month / Decimal(10**9) / month_days)
    assert Decimal(body["by_kind"]["storage"]) == Decimal(line["amount_usd"]) + Decimal(
        warm["amount_usd"]
    )
    assert body["cost_usd"] == body["by_kind"]["storage"]
    assert tier_of(acme, other) == Tier.WARM  # the other trace is on no run's line


def test_a_run_whose_trace_is_deleted_pays_nothing_for_the_rest_of_that_day(
    api, acme, make_key, spread_prices
):
    key = make_key(acme, "admin", "read")
    set_policy(api, key)
    trace = send_trace(acme)
    run = run_of(acme, trace)
    apply(acme, days_ahead=4)  # cold (past hot 1 and warm 2, before 6)
    assert tier_of(acme, trace) == Tier.COLD
    cost = api.get(f"/api/v1/runs/{run.pk}/cost", key=key).json()
    assert Decimal(cost["by_kind"]["storage"]) > 0
    age(acme, trace, days=3)  # past the policy's six days: deleted on the same day's count
    apply(acme, days_ahead=4)
    assert not Trace.all_tenants.filter(tenant=acme, trace_id=trace).exists()
    with tenant_scope(acme):
        line = LedgerEntry.objects.get(run=run, kind="storage")
    assert (line.amount_nusd, line.detail["bytes"]) == (0, {})
    cost = api.get(f"/api/v1/runs/{run.pk}/cost", key=key).json()
    assert cost["by_kind"]["storage"] == "0"
