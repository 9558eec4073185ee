"""The users traces acted for (`tracing_trace.user_id`): each with its traces,
sessions, tokens and cost, latest activity first."""

from decimal import Decimal

from django.db.models import Count, Max, Sum

from billing import selectors as billing_selectors
from billing.prices import plain
from tracing.models import Trace

# Traces summed into one user's cost; past this the page says the cost is partial.
MAX_COSTED_TRACES = 5000


def user_list(*, limit: int = 200) -> list[dict]:
    """The tenant's users, most recently active first, each with trace and session
    counts, tokens and the cost billing gave their traces."""
    rows = list(
        Trace.objects.exclude(user_id="")
        .values("user_id")
        .annotate(
            trace_count=Count("id"),
            session_count=Count("session_id", distinct=True),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            last_start=Max("start_time"),
        )
        .order_by("-last_start", "user_id")[:limit]
    )
    for row in rows:
        row.update(user_cost(user_id=row["user_id"]))
    return rows


def user_cost(*, user_id: str) -> dict:
    """{"cost_usd": str | None, "cost_unknown": bool, "cost_partial": bool}: the sum of
    billing's trace totals over the user's traces (None until one is costed)."""
    trace_ids = [
        t.hex
        for t in Trace.objects.filter(user_id=user_id)
        .order_by("-start_time")
        .values_list("trace_id", flat=True)[: MAX_COSTED_TRACES + 1]
    ]
    partial = len(trace_ids) > MAX_COSTED_TRACES
    totals = list(billing_selectors.totals("trace", trace_ids[:MAX_COSTED_TRACES]).values())
    costed = [Decimal(t["cost_usd"]) for t in totals if t["cost_usd"] is not None]
    return {
        "cost_usd": plain(sum(costed, Decimal(0))) if costed else None,
        "cost_unknown": any(t["cost_unknown"] for t in totals),
        "cost_partial": partial,
    }
