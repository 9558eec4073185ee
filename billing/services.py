"""Billing's operations: the only code that writes prices, overrides and budgets.
(Costs are written by costs.py on ingest, the ledger by hook.py in the gateway.)"""

import json
import logging
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Max
from django.utils import timezone

from billing.budgets import cache as budget_cache
from billing.budgets import user_as_stored
from billing.models import (
    DEFAULT_THRESHOLDS,
    LEGACY_STORAGE_FIELD,
    PLATFORM_FIELDS,
    STORAGE_PRICE_FIELDS,
    BillingAccount,
    Budget,
    BudgetPeriod,
    BudgetScope,
    PriceBook,
    PriceEntry,
    PriceOverride,
    StoragePriceOverride,
)
from billing.prices import cache, to_nusd, usd
from controlplane.models import AuditEvent, Tenant
from controlplane.services import Actor, ServiceError, audit_record

PRICE_FIELDS = (
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "cache_write_usd_per_mtok",
)
ENTRY_FIELDS = ("provider", "model", *PRICE_FIELDS)
MAX_CAP_USD = Decimal("10000000")
log = logging.getLogger(__name__)


class FieldError(ServiceError):
    """Bad input; `field` names where (e.g. "entries[2].model")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _money(value, field: str, *, allow_zero: bool = True) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError(field, 'must be a number of USD (a string such as "3.00" keeps it exact)')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise FieldError(field, f"{value!r} is not a number") from None
    if not amount.is_finite() or amount < 0 or (amount == 0 and not allow_zero):
        raise FieldError(
            field, "must be a positive number" if not allow_zero else "must be 0 or more"
        )
    if amount > MAX_CAP_USD:
        raise FieldError(field, f"must be at most {MAX_CAP_USD}")
    return amount


# --- the price book --------------------------------------------------------------------


def _entry(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise FieldError(where, "must be an object")
    for key in ("provider", "model"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise FieldError(f"{where}.{key}", "must be a non-empty string")
    out = {"provider": item["provider"].strip().lower(), "model": item["model"].strip()}
    for key in PRICE_FIELDS:
        if key not in item and key.startswith("cache_"):
            out[key] = Decimal(0)
            continue
        if key not in item:
            raise FieldError(f"{where}.{key}", "is required")
        out[key] = _money(item[key], f"{where}.{key}")
    return out


@transaction.atomic
def price_book_load(*, data: dict, source: str = "") -> PriceBook:
    """A new version of the book from the seed format (see billing/prices/*.json)."""
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise FieldError("models", "must be a non-empty list")
    platform = data.get("platform", {})
    if not isinstance(platform, dict):
        raise FieldError("platform", "must be an object of unit prices")
    if LEGACY_STORAGE_FIELD in platform:
        # An older file's one storage price stands for every class it does not name.
        one = platform[LEGACY_STORAGE_FIELD]
        platform = {**dict.fromkeys(STORAGE_PRICE_FIELDS.values(), one), **platform}
    latest = PriceBook.objects.aggregate(m=Max("version"))["m"] or 0
    book = PriceBook.objects.create(
        version=latest + 1,
        source=str(data.get("source") or source)[:2000],
        **{k: _money(platform.get(k, 0), f"platform.{k}") for k in PLATFORM_FIELDS},
    )
    entries = []
    for index, item in enumerate(models):
        where = f"models[{index}]"
        fields = _entry(item, where)
        try:
            effective = date.fromisoformat(str(item.get("effective_from", "1970-01-01")))
        except ValueError:
            raise FieldError(f"{where}.effective_from", "must be a date (YYYY-MM-DD)") from None
        aliases = item.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise FieldError(f"{where}.aliases", "must be a list of model names")
        entries.append(
            PriceEntry(
                book=book,
                effective_from=effective,
                aliases=aliases,
                input_includes_cache=bool(item.get("input_includes_cache", False)),
                **fields,
            )
        )
    PriceEntry.objects.bulk_create(entries)
    transaction.on_commit(cache.clear)
    return book


def price_book_load_file(*, path: Path) -> PriceBook:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ServiceError(f"{path}: {exc}") from None
    return price_book_load(data=data, source=str(path))


def seed_path() -> Path:
    """The newest seed file. Files are named by the month or day their prices were read
    (2026-12, 2026-12-02), compared part by part so a day sorts after its month."""
    return max((Path(__file__).parent / "prices").glob("*.json"), key=lambda p: p.stem.split("-"))


@transaction.atomic
def price_overrides_set(*, tenant: Tenant, entries, actor: Actor) -> list[PriceOverride]:
    """Replace the tenant's overrides with these entries (an empty list removes them)."""
    if not isinstance(entries, list):
        raise FieldError("entries", "must be a list of price entries")
    cleaned = {}
    for index, item in enumerate(entries):
        where = f"entries[{index}]"
        if isinstance(item, dict) and set(item) - set(ENTRY_FIELDS):
            raise FieldError(f"{where}.{sorted(set(item) - set(ENTRY_FIELDS))[0]}", "unknown field")
        fields = _entry(item, where)
        cleaned[(fields["provider"], fields["model"].lower())] = fields
    before = list(PriceOverride.objects.values(*ENTRY_FIELDS))
    PriceOverride.objects.all().delete()
    rows = PriceOverride.objects.bulk_create(
        [PriceOverride(tenant=tenant, **f) for f in cleaned.values()]
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="prices.override",
        target=tenant,
        data={
            "before": [_plain(r) for r in before],
            "after": [_plain(f) for f in cleaned.values()],
        },
    )
    transaction.on_commit(cache.clear)
    return rows


@transaction.atomic
def prices_set(*, tenant: Tenant, actor: Actor, entries=None, storage=None) -> None:
    """Replace the tenant's model overrides, its storage prices or both at once (None
    keeps that set as it is)."""
    if entries is not None:
        price_overrides_set(tenant=tenant, entries=entries, actor=actor)
    if storage is not None:
        storage_prices_set(tenant=tenant, prices=storage, actor=actor)


@transaction.atomic
def storage_prices_set(*, tenant: Tenant, prices, actor: Actor) -> dict[str, Decimal]:
    """Replace the tenant's own storage prices ({place: USD per GB-month}, places as in
    STORAGE_PRICE_FIELDS; an empty object removes them): billing's daily storage cost
    and the storage figures charge them instead of the book's."""
    if not isinstance(prices, dict):
        raise FieldError("storage", "must be an object of place to USD per GB-month")
    cleaned = {}
    for place, value in prices.items():
        if place not in STORAGE_PRICE_FIELDS:
            known = ", ".join(STORAGE_PRICE_FIELDS)
            raise FieldError(f"storage.{place}", f"is not a storage place (known: {known})")
        cleaned[place] = _money(value, f"storage.{place}")
    before = dict(StoragePriceOverride.objects.values_list("place", "gb_month_usd"))
    StoragePriceOverride.objects.all().delete()
    StoragePriceOverride.objects.bulk_create(
        [StoragePriceOverride(tenant=tenant, place=p, gb_month_usd=v) for p, v in cleaned.items()]
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="prices.storage",
        target=tenant,
        data={"before": _plain(before), "after": _plain(cleaned)},
    )
    transaction.on_commit(cache.clear)
    return cleaned


def _plain(fields: dict) -> dict:
    return {k: str(v) for k, v in fields.items()}


# --- budgets ---------------------------------------------------------------------------


def _thresholds(value) -> list:
    if value is None:
        return list(DEFAULT_THRESHOLDS)
    if not isinstance(value, list) or len(value) > 10:
        raise FieldError("thresholds", "must be a list of up to 10 fractions of the cap")
    out = []
    for index, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
            raise FieldError(f"thresholds[{index}]", "must be a fraction in (0, 1]")
        out.append(t)
    return sorted(set(out))


def _budget_fields(data: dict, *, tenant_id: int, partial_of: Budget | None = None) -> dict:
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    known = {"scope", "agent", "user", "period", "cap_usd", "thresholds"}
    unknown = set(data) - known - {"id", "spend"}
    if unknown:
        raise FieldError(sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(known))})")
    current = partial_of
    scope = data.get("scope", current.scope if current else None)
    if scope not in BudgetScope.values:
        raise FieldError("scope", f"must be one of {', '.join(BudgetScope.values)}")
    agent = data.get("agent", current.agent if current else "") or ""
    if not isinstance(agent, str) or len(agent) > 255:
        raise FieldError("agent", "must be an agent's name")
    if scope == BudgetScope.AGENT and not agent:
        raise FieldError("agent", "is required for an agent budget")
    if scope in (BudgetScope.TENANT, BudgetScope.USER) and agent:
        raise FieldError("agent", f"must be empty for a {scope} budget")
    user = data.get("user", current.user if current else "") or ""
    if not isinstance(user, str) or len(user) > 255:
        raise FieldError("user", "must be a user's id")
    if scope == BudgetScope.USER and not user.strip():
        raise FieldError("user", "is required for a user budget")
    if scope != BudgetScope.USER and user:
        raise FieldError("user", "is only for a user budget")
    if "user" in data and user:
        user = user_as_stored(tenant_id=tenant_id, user=user.strip())
    default_period = BudgetPeriod.LIFETIME if scope == BudgetScope.RUN else BudgetPeriod.MONTH
    period = data.get("period", current.period if current else default_period)
    if period not in BudgetPeriod.values:
        raise FieldError("period", f"must be one of {', '.join(BudgetPeriod.values)}")
    if scope == BudgetScope.RUN and period != BudgetPeriod.LIFETIME:
        raise FieldError("period", "a run budget holds for the run's lifetime")
    if "cap_usd" not in data and current is None:
        raise FieldError("cap_usd", "is required")
    cap = (
        to_nusd(_money(data["cap_usd"], "cap_usd", allow_zero=False))
        if "cap_usd" in data
        else current.cap_nusd
    )
    thresholds = (
        _thresholds(data["thresholds"])
        if "thresholds" in data
        else (current.thresholds if current else list(DEFAULT_THRESHOLDS))
    )
    return {
        "scope": scope,
        "agent": agent,
        "user": user,
        "period": period,
        "cap_nusd": cap,
        "thresholds": thresholds,
    }


def _audit_data(budget: Budget) -> dict:
    return {
        "scope": budget.scope,
        "agent": budget.agent,
        "user": budget.user,
        "period": budget.period,
        "cap_usd": usd(budget.cap_nusd),
        "thresholds": budget.thresholds,
    }


@transaction.atomic
def budget_create(*, tenant: Tenant, data: dict, actor: Actor) -> Budget:
    budget = Budget.objects.create(tenant=tenant, **_budget_fields(data, tenant_id=tenant.pk))
    budget_cache.invalidate(tenant.pk)
    audit_record(
        tenant=tenant, actor=actor, action="budget.create", target=budget, data=_audit_data(budget)
    )
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, data: dict, actor: Actor) -> Budget:
    fields = _budget_fields(data, tenant_id=budget.tenant_id, partial_of=budget)
    if fields["scope"] != budget.scope or fields["period"] != budget.period:
        # Spend is kept per period of one scope: a different one is a new budget.
        raise FieldError(
            "scope" if fields["scope"] != budget.scope else "period",
            "cannot change; delete the budget and create another",
        )
    before = _audit_data(budget)
    for key, value in fields.items():
        setattr(budget, key, value)
    budget.updated_at = timezone.now()
    budget.save()
    budget_cache.invalidate(budget.tenant_id)
    audit_record(
        tenant=budget.tenant,
        actor=actor,
        action="budget.update",
        target=budget,
        data={"before": before, "after": _audit_data(budget)},
    )
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: Actor) -> None:
    audit_record(
        tenant=budget.tenant,
        actor=actor,
        action="budget.delete",
        target=budget,
        data=_audit_data(budget),
    )
    budget_cache.invalidate(budget.tenant_id)
    budget.delete()


def run_budget_create(*, run, cap_usd) -> Budget:
    """A run's own cap, from POST /api/v1/runs `budget_usd` or the manifest's limits."""
    budget_cache.invalidate(run.tenant_id)
    return Budget.objects.create(
        tenant_id=run.tenant_id,
        scope=BudgetScope.RUN,
        run=run,
        agent=run.agent.name,
        period=BudgetPeriod.LIFETIME,
        cap_nusd=to_nusd(_money(cap_usd, "budget_usd", allow_zero=False)),
        thresholds=list(DEFAULT_THRESHOLDS),
    )


def _flag(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise FieldError(field, "must be true or false")
    return value


@transaction.atomic
def account_set(*, tenant: Tenant, fail_open, actor: Actor) -> BillingAccount:
    """Whether the tenant's calls go ahead when the budget store cannot be reached
    (fail open) or are refused (fail closed, the default)."""
    fail_open = _flag(fail_open, "fail_open")
    account, _ = BillingAccount.objects.get_or_create(tenant=tenant)
    before = account.fail_open
    account.fail_open = fail_open
    account.save(update_fields=["fail_open"])
    audit_record(
        tenant=tenant,
        actor=actor,
        action="billing.account",
        target=account,
        data={"before": {"fail_open": before}, "after": {"fail_open": fail_open}},
    )
    return account


def budget_store_unreachable(*, tenant_id: int, run_id: int, during: str) -> bool:
    """A managed run's call (or its admission) found the budget store unreachable:
    whether it may go ahead unheld, which only a tenant that opted out of fail-closed
    allows. Each run's first such call is audited with what became of it, so the tenant
    can see which runs spent unheld and which were stopped."""
    from execution.models import Run

    try:
        went_ahead = (
            BillingAccount.objects.unscoped().filter(tenant_id=tenant_id, fail_open=True).exists()
        )
        action = "budget.unheld" if went_ahead else "budget.store_refused"
        recorded = AuditEvent.all_tenants.filter(
            tenant_id=tenant_id, action=action, target_type="run", target_id=str(run_id)
        ).exists()
        run = None if recorded else Run.objects.unscoped().filter(pk=run_id).first()
        if run is not None:
            audit_record(
                tenant=run.tenant,
                actor=Actor.system(),
                action=action,
                target=run,
                data={"during": during, "store": settings.BILLING_BUDGET_STORE},
            )
    except DatabaseError:
        # The database is the budget store, or down with it: nothing can be held.
        log.exception("run %s: the budget store and the database cannot be reached", run_id)
        return False
    return went_ahead
