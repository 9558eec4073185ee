"""Which budgets a call answers to, and what happens when spend moves their windows."""

import logging
from datetime import date
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import Budget, BudgetPeriod, BudgetScope
from billing.prices import usd
from billing.signals import budget_threshold_crossed
from billing.store import Window
from tracing.ingest import rows

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
    elif budget.run_id:
        subject = f"run {budget.run_id}'s"
    else:
        subject = f"the per-run ({budget.agent or 'every agent'})"
    period = "" if budget.scope == BudgetScope.RUN else f" {budget.period}"
    return f"budget {budget.pk} ({subject}{period} cap of ${usd(budget.cap_nusd)})"


def as_window(budget: Budget, *, day: date, run_id: int | None) -> Window:
    return Window(
        tenant_id=budget.tenant_id,
        budget_id=budget.pk,
        key=window_key(budget, day=day, run_id=run_id),
        cap_nusd=budget.cap_nusd,
        thresholds=tuple(str(t) for t in budget.thresholds),
        label=budget_label(budget),
    )


def applicable(*, tenant_id: int, agent: str, run_id: int | None):
    """The budgets a call of this agent (and run, for a managed one) answers to."""
    match = Q(scope=BudgetScope.TENANT) | Q(scope=BudgetScope.AGENT, agent=agent)
    if run_id is not None:
        match |= Q(scope=BudgetScope.RUN, run_id=run_id) | Q(
            scope=BudgetScope.RUN, run__isnull=True, agent__in=("", agent)
        )
    return Budget.objects.unscoped().filter(Q(tenant_id=tenant_id) & match).order_by("pk")


def windows_for(
    *, tenant_id: int, agent: str, run_id: int | None, day: date | None = None
) -> list[Window]:
    day = day or timezone.now().date()
    budgets = applicable(tenant_id=tenant_id, agent=agent, run_id=run_id)
    return [as_window(b, day=day, run_id=run_id) for b in budgets]


def thresholds_record(*, windows: list[Window], spent_after: list[int], added: int) -> None:
    """Record the thresholds this spend reached; each fires once (a stored crossing is
    not stored again, whoever retries or resends), after the transaction commits."""
    crossed = []
    for w, spent in zip(windows, spent_after, strict=True):
        before = spent - added
        for t in w.thresholds:
            limit = Decimal(w.cap_nusd) * Decimal(t)
            if before < limit <= spent:
                crossed.append((w, t, spent))
    if not crossed:
        return
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
                lambda b=budget_id, k=key, t=threshold, s=spent: _send(b, k, t, s)
            )


def _send(budget_id: int, key: str, threshold: str, spent: int) -> None:
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
        run_id=budget.run_id or (int(key[4:]) if key.startswith("run:") else None),
        period=budget.period,
        window=key,
        threshold=float(threshold),
        cap_usd=usd(budget.cap_nusd),
        spent_usd=usd(spent),
    )
