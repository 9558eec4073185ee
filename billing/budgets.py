"""Which budgets a call answers to, and what happens when spend moves their windows."""

import logging
import time
from collections import Counter
from datetime import date
from decimal import Decimal

from django.db import DatabaseError, transaction
from django.utils import timezone

from billing.models import Budget, BudgetPeriod, BudgetScope
from billing.prices import usd
from billing.signals import budget_threshold_crossed
from billing.store import Unreachable, Window
from controlplane.tenantcache import TenantCache
from tracing.ingest import rows
from tracing.ingest.policy import tenant_redaction

log = logging.getLogger(__name__)


def window_key(budget: Budget, *, day: date, run_id: int | None) -> str:
    if budget.scope == BudgetScope.RUN:
        return f"run:{budget.run_id or run_id}"
    if budget.period == BudgetPeriod.DAY:
        return day.isoformat()
    if budget.period == BudgetPeriod.MONTH:
        return day.strftime("%Y-%m")
    return "lifetime"


def budget_label(budget: Budget) -> str:
    if budget.scope == BudgetScope.TENANT:
        subject = "the tenant's"
    elif budget.scope == BudgetScope.AGENT:
        subject = f"agent {budget.agent!r}'s"
    elif budget.scope == BudgetScope.USER:
        subject = f"user {budget.user!r}'s"
    elif budget.run_id:
        subject = f"run {budget.run_id}'s"
    else:
        subject = f"the per-run ({budget.agent or 'every agent'})"
    period = "" if budget.scope == BudgetScope.RUN else f" {budget.period}"
    return f"budget {budget.pk} ({subject}{period} cap of ${usd(budget.cap_nusd)})"


def user_as_stored(*, tenant_id: int, user: str) -> str:
    """A user id as spans' users are stored: redacted by the tenant's redactor, so a
    budget for "dev@acme.example" matches the spans that carried that address (stored
    as "[EMAIL:3f9a]"), and a placeholder given as such stays as it is."""
    return tenant_redaction(tenant_id).redactor.redact_short(user, Counter())[:255]


def as_window(budget: Budget, *, day: date, run_id: int | None) -> Window:
    return Window(
        tenant_id=budget.tenant_id,
        budget_id=budget.pk,
        key=window_key(budget, day=day, run_id=run_id),
        cap_nusd=budget.cap_nusd,
        thresholds=tuple(str(t) for t in budget.thresholds),
        label=budget_label(budget),
    )


def applicable(*, tenant_id: int, agent: str, run_id: int | None, user: str = "") -> list[Budget]:
    """The budgets a call of this agent (and run, for a managed one; and user, for a
    span that names one) answers to, from the cache below: a budget changed elsewhere
    applies within TTL seconds."""
    tenant_wide, own = cache.budgets(tenant_id, run_id)
    out = []
    for b in tenant_wide:
        if (
            b.scope == BudgetScope.TENANT
            or (b.scope == BudgetScope.AGENT and b.agent == agent)
            or (b.scope == BudgetScope.USER and user and b.user == user)
        ):
            out.append(b)
        elif b.scope == BudgetScope.RUN and run_id is not None and b.agent in ("", agent):
            out.append(b)  # a cap on each run (of the agent)
    return sorted(out + own, key=lambda b: b.pk)


class BudgetCache:
    """Each tenant's budgets that are not one run's own, and each run's own, kept TTL
    seconds per process (in controlplane.tenantcache), so reserving a call asks the
    database for its budgets at most once per TTL. Writers invalidate their process's
    entries on commit."""

    TTL = 2.0

    def __init__(self):
        self._entries = TenantCache("budgets", size=4000, after_commit=False)

    def budgets(self, tenant_id: int, run_id: int | None) -> tuple[list, list]:
        tenant_wide = self._fresh(
            tenant_id,
            "tenant",
            lambda: list(Budget.objects.unscoped().filter(tenant_id=tenant_id, run__isnull=True)),
        )
        if run_id is None:
            return tenant_wide, []
        own = self._fresh(
            tenant_id,
            run_id,
            lambda: list(Budget.objects.unscoped().filter(tenant_id=tenant_id, run_id=run_id)),
        )
        return tenant_wide, own

    def _fresh(self, tenant_id: int, key, load):
        now = time.monotonic()
        held = self._entries.get(tenant_id, key)
        if held is None or now - held[0] > self.TTL:
            held = (now, load())
            self._entries.put(tenant_id, {key: held})
        return held[1]

    def invalidate(self, tenant_id: int) -> None:
        transaction.on_commit(lambda: self._entries.invalidate(tenant_id))


cache = BudgetCache()


def windows_for(
    *, tenant_id: int, agent: str, run_id: int | None, day: date | None = None, user: str = ""
) -> list[Window]:
    day = day or timezone.now().date()
    budgets = applicable(tenant_id=tenant_id, agent=agent, run_id=run_id, user=user)
    return [as_window(b, day=day, run_id=run_id) for b in budgets]


# The cap's own crossing, whatever thresholds the budget lists: reaching the cap is
# always announced, once per window. A listed threshold equal to 1 is this one (stored
# as "1", so "1.0" and "1" are one crossing).
CAP = "1"


def _thresholds(w: Window) -> list[str]:
    return [t for t in w.thresholds if Decimal(t) < 1] + [CAP]


def thresholds_record(*, windows: list[Window], spent_after: list[int], added: int) -> None:
    """Record the thresholds this spend reached, the cap among them; each fires once (a
    stored crossing is not stored again, whoever retries or resends), after the
    transaction commits."""
    crossed = []
    for w, spent in zip(windows, spent_after, strict=True):
        before = spent - added
        for t in _thresholds(w):
            limit = Decimal(w.cap_nusd) * Decimal(t)
            if before < limit <= spent:
                crossed.append((w, t, spent))
    if crossed:
        _crossings_store(crossed, refused=False)


def cap_refused(*, window: Window, store) -> None:
    """A call the window's cap refused: the cap is reached for that call even while the
    settled spend is below it (what is held for calls in flight, or the call's worst
    case, would pass it). Recorded as the cap's crossing, so it fires once per window
    however many calls and runs are refused, and not again when spend reaches the cap."""
    try:
        spent = store.state([window])[0][0]
    except (Unreachable, DatabaseError):  # the refusal stands; only the figure is missing
        spent = 0
    _crossings_store([(window, CAP, spent)], refused=True)


def _crossings_store(crossed: list[tuple], *, refused: bool) -> None:
    now = timezone.now()
    with transaction.atomic():
        stored = rows.insert_ignoring_conflicts(
            "billing_thresholdcrossing",
            ("tenant_id", "budget_id", "window_key", "threshold", "spent_nusd", "at"),
            [(w.tenant_id, w.budget_id, w.key, t, s, now) for w, t, s in crossed],
            returning=("budget_id", "window_key", "threshold", "spent_nusd"),
        )
        for budget_id, key, threshold, spent in stored:
            transaction.on_commit(
                lambda b=budget_id, k=key, t=threshold, s=spent: _send(b, k, t, s, refused)
            )


def _send(budget_id: int, key: str, threshold: str, spent: int, refused: bool) -> None:
    budget = Budget.objects.unscoped().filter(pk=budget_id).first()
    if budget is None:
        return
    log.info("budget %s reached %s of its cap in %s", budget_id, threshold, key)
    budget_threshold_crossed.send(
        sender="billing",
        tenant_id=budget.tenant_id,
        budget_id=budget.pk,
        scope=budget.scope,
        agent=budget.agent,
        user=budget.user,
        run_id=budget.run_id or (int(key[4:]) if key.startswith("run:") else None),
        period=budget.period,
        window=key,
        threshold=float(threshold),
        cap_reached=threshold == CAP,
        refused=refused,
        cap_usd=usd(budget.cap_nusd),
        spent_usd=usd(spent),
    )
