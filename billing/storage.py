"""Storage priced per GB-month by where the bytes sit: retention counts a tenant's bytes
per tier and place (tracing/retention/storage.py: the database, and blob objects by S3
storage class) and records each day's share of the month here, as a `storage` cost of
that day, so usage reports and statements include it. The storage API and the console
price each tier with the same `storage_month_usd`, so their figures add up to the day's
cost times the month's days."""

import calendar
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

from billing.models import STORAGE_PRICE_FIELDS, CostKind, LedgerEntry, LedgerKind, UsageDaily
from billing.prices import plain, storage_prices, to_nusd

GB = Decimal(10**9)
# A run's storage settlement of a day has one key, so each recount rewrites it.
RUN_DAY = uuid.UUID("6f1c3e2a-58d4-4b8e-9a51-0d7c2f93b6e4")


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


def storage_runs_record(*, tenant_id: int, day: date, stored: dict[int, dict[str, int]]) -> None:
    """Set (as storage_day_record does) each run's storage settlement of the day: its
    trace's bytes ({run id: {place: bytes}}, {} for a run whose trace is gone) at the
    same prices. It is the run's part of the tenant's day cost, whose bytes already
    count it, so the roll-ups are not added to. A run whose trace went since the
    day's last count is set to nothing; a run with nothing to pay gets no line."""
    days = calendar.monthrange(day.year, day.month)[1]
    prices = storage_prices(tenant_id=tenant_id)
    # Each run's line of the day is at the day's start, found by the ledger's index on
    # (tenant, run, at), however long the tenant's ledger is.
    at = datetime.combine(day, time.min, tzinfo=UTC)
    rows = {
        row.run_id: row
        for row in LedgerEntry.objects.filter(
            run_id__in=list(stored), at=at, entry=LedgerKind.SETTLE, kind=CostKind.STORAGE
        )
    }
    new, changed = [], []
    for run_id, placed in stored.items():
        detail = {
            "day": day.isoformat(),
            "bytes": placed,
            "usd_per_gb_month": {place: plain(prices[place]) for place in placed},
            "month_days": days,
        }
        nusd = to_nusd(storage_month_usd(tenant_id=tenant_id, stored=placed) / days)
        row = rows.get(run_id)
        if row is None and nusd:
            new.append(
                LedgerEntry(
                    tenant_id=tenant_id,
                    run_id=run_id,
                    reservation=uuid.uuid5(RUN_DAY, f"{run_id}/{day.isoformat()}"),
                    entry=LedgerKind.SETTLE,
                    kind=CostKind.STORAGE,
                    amount_nusd=nusd,
                    detail=detail,
                    at=at,
                )
            )
        elif row is not None and (row.amount_nusd, row.detail) != (nusd, detail):
            row.amount_nusd, row.detail = nusd, detail
            changed.append(row)
    LedgerEntry.objects.bulk_create(new)
    LedgerEntry.objects.bulk_update(changed, ["amount_nusd", "detail"])
