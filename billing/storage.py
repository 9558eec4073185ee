"""Storage priced per GB-month by where the bytes sit: retention counts a tenant's bytes
per tier and place (tracing/retention/storage.py: the database, and blob objects by S3
storage class) and records each day's share of the month here, as a `storage` cost of
that day, so usage reports and statements include it. The storage API and the console
price each tier with the same `storage_month_usd`, so their figures add up to the day's
cost times the month's days."""

import calendar
from datetime import date
from decimal import Decimal

from billing.models import STORAGE_PRICE_FIELDS, CostKind, UsageDaily
from billing.prices import storage_prices, to_nusd

GB = Decimal(10**9)


def storage_month_usd(*, tenant_id: int, stored: dict[str, int]) -> Decimal:
    """What the bytes cost the tenant a month, each at its place's price ({place: bytes},
    places as in models.STORAGE_PRICE_FIELDS; the tenant's own prices in place)."""
    unknown = set(stored) - set(STORAGE_PRICE_FIELDS)
    if unknown:
        # A class the book has no price for would be stored for free without a word.
        raise ValueError(f"no storage price for {', '.join(sorted(unknown))}")
    prices = storage_prices(tenant_id=tenant_id)
    return sum((Decimal(n) / GB * prices[place] for place, n in stored.items()), Decimal(0))


def storage_day_record(*, tenant_id: int, day: date, stored: dict[str, int]) -> int:
    """Set (not add: the count is the day's latest) the day's storage cost for the
    bytes stored now; returns it in nano-dollars."""
    days = calendar.monthrange(day.year, day.month)[1]
    nusd = to_nusd(storage_month_usd(tenant_id=tenant_id, stored=stored) / days)
    UsageDaily.objects.update_or_create(
        tenant_id=tenant_id,
        day=day,
        kind=CostKind.STORAGE,
        agent_name="",
        model="",
        defaults={"cost_nusd": nusd},
    )
    return nusd
