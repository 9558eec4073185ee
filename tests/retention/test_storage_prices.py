"""Storage is priced by where the bytes sit: database rows, hot payload objects and warm
bundles in S3 STANDARD, cold bundles in the class they were moved to."""

import calendar
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services
from billing.models import PriceBook, UsageDaily
from billing.prices import cache, to_nusd
from billing.storage import storage_month_usd
from tests.retention.helpers import POLICY, age, apply, send_trace, tier_of
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
    assert storage_month_usd(stored={"GLACIER_IR": 10**9}) == Decimal("0.004")
    with pytest.raises(ValueError, match="DEEP_ARCHIVE"):
        storage_month_usd(stored={"DEEP_ARCHIVE": 1})


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
