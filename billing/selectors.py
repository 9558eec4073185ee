"""Billing's reads: the effective price book, budgets with their spend, costs of
traces, spans, sessions and runs, a run's cost line by line, usage and statements."""

from collections import Counter, defaultdict
from datetime import date, timedelta

from django.db.models import Count, Sum
from django.utils import timezone

from billing import budgets as budget_rules
from billing.models import (
    PLATFORM_FIELDS,
    STORAGE_PRICE_FIELDS,
    BillingAccount,
    Budget,
    BudgetScope,
    CostKind,
    CostTotal,
    LedgerEntry,
    LedgerKind,
    PriceBook,
    PriceOverride,
    SpanCost,
    StoragePriceOverride,
    UsageDaily,
    call_labels,
)
from billing.prices import plain, usd
from billing.services import PRICE_FIELDS
from billing.store import Unreachable, get_store
from controlplane.tenancy import current_tenant_id
from tracing import labels

# --- prices ----------------------------------------------------------------------------


def _entry_json(row) -> dict:
    return {
        "provider": row.provider,
        "model": row.model,
        **{f: plain(getattr(row, f)) for f in PRICE_FIELDS},
    }


def price_book_effective() -> dict:
    """The newest book with the tenant's overrides in place of the entries they name."""
    book = PriceBook.objects.order_by("-version").first()
    overrides = {(o.model.lower()): o for o in PriceOverride.objects.order_by("provider", "model")}
    entries, seen = [], set()
    if book is not None:
        newest = {}
        for e in book.entries.order_by("provider", "model", "-effective_from"):
            newest.setdefault((e.provider, e.model), e)
        for e in newest.values():
            names = {e.model.lower(), *(a.lower() for a in e.aliases)}
            hit = next((overrides[n] for n in names if n in overrides), None)
            entries.append(_entry_json(hit or e))
            if hit:
                seen.add(hit.pk)
    entries += [_entry_json(o) for o in overrides.values() if o.pk not in seen]
    platform = {f: plain(getattr(book, f)) if book else "0" for f in PLATFORM_FIELDS}
    storage = {
        row.place: plain(row.gb_month_usd) for row in StoragePriceOverride.objects.order_by("place")
    }
    for place, price in storage.items():
        platform[STORAGE_PRICE_FIELDS[place]] = price
    return {
        "version": book.version if book else None,
        "source": book.source if book else "",
        "platform": platform,
        "entries": entries,
        "overrides": [_entry_json(o) for o in overrides.values()],
        "storage_overrides": storage,
    }


# --- budgets ---------------------------------------------------------------------------


def account_json() -> dict:
    """The tenant's budget settings: fail_open lets calls go ahead unheld when the
    budget store cannot be reached (the default, false, refuses them)."""
    account = BillingAccount.objects.first()
    return {"fail_open": bool(account and account.fail_open)}


def budget_json(budget: Budget, spend: tuple | None, window: str | None) -> dict:
    spent, reserved = spend if spend is not None else (None, None)
    return {
        "id": budget.pk,
        "scope": budget.scope,
        "agent": budget.agent,
        "user": budget.user,
        "run": budget.run_id,
        "period": budget.period,
        "cap_usd": usd(budget.cap_nusd),
        "thresholds": budget.thresholds,
        "window": window,
        "spent_usd": usd(spent),
        "reserved_usd": usd(reserved),
        "remaining_usd": usd(max(0, budget.cap_nusd - spent - reserved))
        if spent is not None
        else None,
        "created_at": budget.created_at.isoformat(),
        "updated_at": budget.updated_at.isoformat(),
    }


def budgets_with_spend(budgets: list[Budget]) -> list[dict]:
    """Each budget with its current period's spend and reservations. A per-run policy
    (scope run, no run) has one window per run: its spend is shown on each run."""
    today = timezone.now().date()
    windows = {
        b.pk: budget_rules.as_window(b, day=today, run_id=None)
        for b in budgets
        if not (b.scope == BudgetScope.RUN and b.run_id is None)
    }
    ordered = list(windows.values())
    try:
        states = dict(zip([w.budget_id for w in ordered], get_store().state(ordered), strict=True))
    except Unreachable:
        states = {}
    return [
        budget_json(b, states.get(b.pk), windows[b.pk].key if b.pk in windows else None)
        for b in budgets
    ]


def budget_check(*, tenant_id: int, agent: str, user: str = "") -> dict:
    """Whether an external agent's next call (for this user, when one is named) is
    within every budget it answers to. `user` is as spans' users are stored."""
    windows = budget_rules.windows_for(tenant_id=tenant_id, agent=agent, run_id=None, user=user)
    try:
        states = get_store().state(windows)
    except Unreachable:
        if not account_json()["fail_open"]:
            raise
        return {
            "agent": agent,
            "user": user,
            "allowed": True,
            "detail": "the budget store cannot be reached; the tenant lets calls go ahead",
            "budgets": [],
        }
    checked = []
    for w, (spent, reserved) in zip(windows, states, strict=True):
        checked.append(
            {
                "id": w.budget_id,
                "window": w.key,
                "cap_usd": usd(w.cap_nusd),
                "spent_usd": usd(spent),
                "reserved_usd": usd(reserved),
                "remaining_usd": usd(max(0, w.cap_nusd - spent - reserved)),
                "allowed": spent + reserved < w.cap_nusd,
            }
        )
    refused = [c for c in checked if not c["allowed"]]
    return {
        "agent": agent,
        "user": user,
        "allowed": not refused,
        "detail": f"budget {refused[0]['id']} is spent" if refused else "",
        "budgets": checked,
    }


# --- costs of traces, spans, sessions, runs --------------------------------------------


def totals(dimension: str, keys) -> dict[str, dict]:
    """{key: {"cost_usd", "cost_unknown"}} of traces, runs or sessions (one query)."""
    rows = CostTotal.objects.filter(dimension=dimension, key__in=list(keys)).values(
        "key", "cost_nusd", "unknown_calls", "input_tokens", "output_tokens"
    )
    return {
        r["key"]: {
            "cost_usd": usd(r["cost_nusd"]),
            "cost_unknown": r["unknown_calls"] > 0,
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
        }
        for r in rows
    }


def span_costs(*, trace_id) -> dict[int, dict]:
    """{span id: {"cost_usd", "cost_unknown", "counted"}} of one trace's LLM calls."""
    rows = SpanCost.objects.filter(trace_id=trace_id).values_list(
        "span_id", "cost_nusd", "counted", "over_budget"
    )
    return {
        s: {
            "cost_usd": usd(c) if counted else "0",
            "cost_unknown": c is None,
            "counted": counted,
            "over_budget": over,
        }
        for s, c, counted, over in rows
    }


def run_costs(run_ids) -> dict[int, str]:
    """{run id: cost in USD}: the sum of each run's settlements."""
    rows = (
        LedgerEntry.objects.filter(run_id__in=list(run_ids), entry=LedgerKind.SETTLE)
        .values("run_id")
        .annotate(total=Sum("amount_nusd"))
    )
    found = {r["run_id"]: usd(r["total"] or 0) for r in rows}
    return {rid: found.get(rid, "0") for rid in run_ids}


def run_cost(*, run) -> dict:
    """A run's cost line by line, split into LLM tokens, tools, sandbox and storage."""
    entries = list(LedgerEntry.objects.filter(run=run).order_by("at", "pk"))
    by_kind = dict.fromkeys(CostKind.values, 0)
    held: dict = defaultdict(int)
    lines = []
    for e in entries:
        if e.entry == LedgerKind.SETTLE:
            by_kind[e.kind] += e.amount_nusd
            lines.append(
                {
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "amount_usd": usd(e.amount_nusd),
                    "reservation": str(e.reservation),
                    **e.detail,
                }
            )
        elif e.entry == LedgerKind.RESERVE:
            held[e.reservation] += e.amount_nusd
        if e.entry in (LedgerKind.SETTLE, LedgerKind.RELEASE) and e.reservation in held:
            held.pop(e.reservation)
    spans = totals("run", [str(run.pk)]).get(str(run.pk))
    return {
        "run_id": run.pk,
        "cost_usd": usd(sum(by_kind.values())),
        "by_kind": {k: usd(v) for k, v in by_kind.items()},
        "reserved_usd": usd(sum(held.values())),
        "lines": lines,
        "llm_from_spans": spans,  # the same calls as costed from the run's spans
        "ledger": [
            {
                "at": e.at.isoformat(),
                "entry": e.entry,
                "kind": e.kind,
                "amount_usd": usd(e.amount_nusd),
                "reservation": str(e.reservation),
            }
            for e in entries
        ],
    }


# --- usage reports ---------------------------------------------------------------------

GROUPS = ("day", "agent", "model", "kind", "user")
_COLUMN = {"day": "day", "agent": "agent_name", "model": "model", "kind": "kind", "user": "user_id"}


def usage(*, since: date, until: date, group_by: list[str]) -> list[dict]:
    """Cost and tokens between two days (inclusive), grouped by any of GROUPS."""
    columns = [_COLUMN[g] for g in group_by]
    rows = (
        UsageDaily.objects.filter(day__gte=since, day__lte=until)
        .values(*columns)
        .annotate(
            cost=Sum("cost_nusd"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cache_read_tokens=Sum("cache_read_tokens"),
            cache_write_tokens=Sum("cache_write_tokens"),
            calls=Sum("calls"),
            unknown_calls=Sum("unknown_calls"),
        )
        .order_by(*columns)
    )
    out = []
    for r in rows:
        item = {g: (r[_COLUMN[g]].isoformat() if g == "day" else r[_COLUMN[g]]) for g in group_by}
        item.update(
            {
                "cost_usd": usd(r["cost"] or 0),
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "cache_read_tokens": r["cache_read_tokens"],
                "cache_write_tokens": r["cache_write_tokens"],
                "calls": r["calls"],
                "unknown_calls": r["unknown_calls"],
            }
        )
        out.append(item)
    return out


def unknown_models(*, since: date, until: date) -> list[dict]:
    """Models whose calls have no price: listed, so nothing is silently free."""
    rows = (
        SpanCost.objects.filter(day__gte=since, day__lte=until, counted=True, cost_nusd=None)
        .values_list("labels_id")
        .annotate(calls=Count("pk"))
    )
    rows = list(rows)
    # Several label sets (agents, request models) can name one provider and model.
    values = labels.values_of(current_tenant_id(), {labels_id for labels_id, _ in rows})
    calls: Counter = Counter()
    for labels_id, n in rows:
        _, provider, model = call_labels(values[labels_id])
        calls[(provider, model)] += n
    return [
        {"provider": provider, "model": model, "calls": n}
        for (provider, model), n in calls.most_common()
    ]


def month_bounds(month: str) -> tuple[date, date]:
    first = date.fromisoformat(f"{month}-01")
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt - timedelta(days=1)


def statement(*, month: str) -> dict:
    """A tenant's monthly statement: totals by kind, agent and model, unpriced models."""
    since, until = month_bounds(month)
    by_kind = usage(since=since, until=until, group_by=["kind"])
    return {
        "month": month,
        "from": since.isoformat(),
        "to": until.isoformat(),
        "total_usd": usd(sum(_nusd(r["cost_usd"]) for r in by_kind)),
        "by_kind": by_kind,
        "by_agent": usage(since=since, until=until, group_by=["agent"]),
        "by_model": usage(since=since, until=until, group_by=["model"]),
        "cost_unknown": unknown_models(since=since, until=until),
    }


def _nusd(text: str) -> int:
    from billing.prices import to_nusd

    return to_nusd(text)


def top_costs(*, dimension: str, limit: int = 10) -> list[dict]:
    rows = CostTotal.objects.filter(dimension=dimension).order_by("-cost_nusd")[:limit]
    return [{"key": r.key, "cost_usd": usd(r.cost_nusd), "calls": r.calls} for r in rows]


def budget_list() -> list[Budget]:
    return list(Budget.objects.order_by("pk")[:1000])


def budget_get(*, budget_id: int) -> Budget | None:
    return Budget.objects.filter(pk=budget_id).first()


def cost_series(*, since: date, until: date, by: str) -> dict:
    """Cost per day split by agent or model, as a chart draws it: the days, and for
    each agent (or model) its cost in USD on each day."""
    rows = usage(since=since, until=until, group_by=["day", by])
    days = [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]
    at = {d: i for i, d in enumerate(days)}
    series: dict[str, list[float]] = {}
    for r in rows:
        name = r[by] or "(none)"
        series.setdefault(name, [0.0] * len(days))[at[r["day"]]] += float(r["cost_usd"])
    return {"days": days, "series": [{"name": n, "values": v} for n, v in sorted(series.items())]}
