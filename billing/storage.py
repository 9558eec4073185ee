"""Storage priced per GB-month: retention counts a tenant's bytes (tracing/retention/
storage.py) and records each day's share of the month here, as a `storage` cost of
that day, so usage reports and statements include it."""

import calendar
from datetime import date
from decimal import Decimal

from billing.models import CostKind, UsageDaily
from billing.prices import platform_price, to_nusd

GB = Decimal(10**9)


def storage_day_record(*, tenant_id: int, day: date, stored_bytes: int) -> int:
    """Set (not add: the count is the day's latest) the day's storage cost for the
    bytes stored now; returns it in nano-dollars."""
    days = calendar.monthrange(day.year, day.month)[1]
    cost = Decimal(stored_bytes) / GB * platform_price("storage_gb_month_usd") / days
    nusd = to_nusd(cost)
    UsageDaily.objects.update_or_create(
        tenant_id=tenant_id,
        day=day,
        kind=CostKind.STORAGE,
        agent_name="",
        model="",
        defaults={"cost_nusd": nusd},
    )
    return nusd
