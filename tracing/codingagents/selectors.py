"""Reads for the coding-agents page: metric series over days, per-user figures, tool
acceptance, and the agents' sessions from the trace summaries. Call inside a tenant's
scope."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Max, Min, Q, Sum

from tracing import labels
from tracing.codingagents import mapping
from tracing.codingagents.models import MetricKind, MetricPoint
from tracing.models import Span, SpanLabels, Trace
from tracing.selectors import span_detail_unpack

AGENT_NAMES = (mapping.CLAUDE_CODE.name, mapping.CODEX.name)
_PAGE_METRICS = (
    mapping.METRIC_TOKENS,
    mapping.METRIC_COST,
    mapping.METRIC_SESSIONS,
    mapping.METRIC_LINES,
    mapping.METRIC_COMMITS,
    mapping.METRIC_PULL_REQUESTS,
    mapping.METRIC_EDIT_DECISIONS,
)


@dataclass(slots=True)
class Increase:
    """What a point adds in its window: a delta point's value; for a cumulative point,
    the rise since the series' previous point (all of it after a reset)."""

    name: str
    day: date
    value: float
    user: str
    model: str
    attributes: dict


def _increases(since: date, until: date) -> list[Increase]:
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    rows = (
        MetricPoint.objects.filter(name__in=_PAGE_METRICS, time__gte=start, time__lt=end)
        .order_by("series", "time")
        .values_list(
            "series", "time", "name", "value", "cumulative", "start_ns", "user_email", "user_id",
            "model", "attributes",
        )
    )  # fmt: skip
    out = []
    rises = Rises(start)
    for series, moment, name, value, cumulative, series_start, email, user, model, attrs in rows:
        added = rises.of(series, value, cumulative, series_start)
        out.append(Increase(name, moment.date(), added, email or user or "(unknown)", model, attrs))
    return out


class Rises:
    """What each point adds in a window, its points read in (series, time) order: a
    delta point's value; for a cumulative point, the rise since the series' previous
    point (all of it after a reset)."""

    def __init__(self, start: datetime):
        self.start_ns = int(start.timestamp() * 1e9)
        self.last: dict[bytes, float] = {}

    def of(self, series, value: float, cumulative: bool, series_start: int) -> float:
        if not cumulative:
            return value
        series = bytes(series)
        before = self.last.get(series)
        self.last[series] = value
        if before is None:
            # The series' first point in the window: all of it is the window's only if
            # the series started inside it.
            return value if series_start >= self.start_ns else 0.0
        return value - before if value >= before else value


# Codex traces read for their tool decisions; past this the newest are read.
MAX_DECISION_TRACES = 5000


def _codex_decisions(since: date, until: date) -> list[Increase]:
    """Codex's tool decisions in the window as increases of one, from its folded
    tool_decision spans (Codex exports no metrics)."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    # Its tool_decision spans are its only ones with a tool and no operation.
    label_ids = list(
        SpanLabels.objects.filter(agent_name=mapping.CODEX.name, operation="")
        .exclude(tool_name="")
        .values_list("id", flat=True)
    )
    if not label_ids:
        return []
    traces = list(
        Trace.objects.filter(agent_name=mapping.CODEX.name, start_time__lt=end, end_time__gte=start)
        .order_by("-start_time")
        .values_list("trace_id", flat=True)[:MAX_DECISION_TRACES]
    )
    start_ns, end_ns = int(start.timestamp() * 1e9), int(end.timestamp() * 1e9)
    rows = Span.objects.filter(
        trace_id__in=traces, labels_id__in=label_ids, end_ns__gte=start_ns, end_ns__lt=end_ns
    ).values_list("tenant_id", "end_ns", "labels_id", "detail_packed")
    rows = list(rows)
    tools = labels.values_of(rows[0][0], label_ids) if rows else {}
    out = []
    for tenant_id, at_ns, labels_id, packed in rows:
        attrs = span_detail_unpack(tenant_id=tenant_id, packed=packed).get("attributes", {})
        user = next((str(attrs[k]) for k in mapping.USER_KEYS if attrs.get(k)), "")
        out.append(
            Increase(
                name=mapping.CODEX_TOOL_DECISION,
                day=datetime.fromtimestamp(at_ns / 1e9, tz=UTC).date(),
                value=1.0,
                user=str(attrs.get("user.email") or user or "(unknown)"),
                model="",
                attributes={
                    "decision": str(attrs.get("decision", "")),
                    "tool": tools[labels_id]["tool_name"],
                },
            )
        )
    return out


def _days(since: date, until: date) -> list[str]:
    return [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]


def _series(increases, *, name: str, by, days: list[str]) -> dict:
    at = {d: i for i, d in enumerate(days)}
    series: dict[str, list[float]] = {}
    for inc in increases:
        if inc.name == name:
            values = series.setdefault(by(inc) or "(none)", [0.0] * len(days))
            values[at[inc.day.isoformat()]] += inc.value
    return {
        "days": days,
        "series": [{"name": n, "values": [round(v, 6) for v in vals]} for n, vals in sorted(series.items())],
    }  # fmt: skip


@dataclass(slots=True)
class UserFigures:
    user: str
    input_tokens: float = 0
    output_tokens: float = 0
    cache_tokens: float = 0
    cost_usd: float = 0
    sessions: float = 0
    lines_added: float = 0
    lines_removed: float = 0
    commits: float = 0
    pull_requests: float = 0
    accepted: float = 0
    rejected: float = 0

    @property
    def acceptance(self) -> float | None:
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None


@dataclass(slots=True)
class Overview:
    since: date
    until: date
    tokens_by_model: dict
    cost_by_user: dict
    users: list[UserFigures]
    total: UserFigures
    by_tool: dict = field(default_factory=dict)  # tool -> [accepted, rejected]


def _add(figures: UserFigures, inc: Increase) -> None:
    kind = str(inc.attributes.get("type", ""))
    if inc.name == mapping.METRIC_TOKENS:
        if kind == "input":
            figures.input_tokens += inc.value
        elif kind == "output":
            figures.output_tokens += inc.value
        else:
            figures.cache_tokens += inc.value
    elif inc.name == mapping.METRIC_COST:
        figures.cost_usd += inc.value
    elif inc.name == mapping.METRIC_SESSIONS:
        figures.sessions += inc.value
    elif inc.name == mapping.METRIC_LINES:
        if kind == "removed":
            figures.lines_removed += inc.value
        else:
            figures.lines_added += inc.value
    elif inc.name == mapping.METRIC_COMMITS:
        figures.commits += inc.value
    elif inc.name == mapping.METRIC_PULL_REQUESTS:
        figures.pull_requests += inc.value
    elif inc.name in mapping.DECISION_SOURCES:
        decision = str(inc.attributes.get("decision", ""))
        if decision in mapping.ACCEPT_DECISIONS:
            figures.accepted += inc.value
        elif decision in mapping.REJECT_DECISIONS:
            figures.rejected += inc.value


def coding_overview(*, since: date, until: date) -> Overview:
    increases = _increases(since, until) + _codex_decisions(since, until)
    days = _days(since, until)
    users: dict[str, UserFigures] = {}
    total = UserFigures(user="all")
    by_tool: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for inc in increases:
        _add(users.setdefault(inc.user, UserFigures(user=inc.user)), inc)
        _add(total, inc)
        if inc.name in mapping.DECISION_SOURCES:
            decision = str(inc.attributes.get("decision", ""))
            tool = str(inc.attributes.get("tool", "")) or "(tool)"
            if decision in mapping.ACCEPT_DECISIONS:
                by_tool[tool][0] += inc.value
            elif decision in mapping.REJECT_DECISIONS:
                by_tool[tool][1] += inc.value
    return Overview(
        since=since,
        until=until,
        tokens_by_model=_series(
            increases, name=mapping.METRIC_TOKENS, by=lambda i: i.model, days=days
        ),
        cost_by_user=_series(increases, name=mapping.METRIC_COST, by=lambda i: i.user, days=days),
        users=sorted(users.values(), key=lambda u: -u.cost_usd),
        total=total,
        by_tool=dict(sorted(by_tool.items())),
    )


def coding_sessions(*, since: date, until: date, limit: int = 50) -> list[dict]:
    """The agents' sessions, newest first, from the trace summaries of their prompts."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    return list(
        Trace.objects.filter(agent_name__in=AGENT_NAMES, start_time__gte=start, start_time__lt=end)
        .exclude(session_id="")
        .values("session_id", "agent_name")
        .annotate(
            started=Min("start_time"),
            last=Max("end_time"),
            traces=Count("trace_id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            errors=Sum("error_count"),
            user=Max("user_id"),
        )
        .order_by("-started")[:limit]
    )


# --- GET /api/v1/metrics ---------------------------------------------------------------

# What a series can be filtered and grouped by: its columns under these names (`user`
# is the e-mail when the agent sent one, else user.id, as the page shows users), and
# any other attribute as `attr.<key>`.
METRIC_FIELDS = {
    "user_id": "user_id",
    "user_email": "user_email",
    "organization": "organization_id",
    "terminal": "terminal_type",
    "version": "service_version",
    "service": "service_name",
    "session": "session_id",
    "model": "model",
}
ATTRIBUTE_PREFIX = "attr."
INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 1000
MAX_POINTS = 100_000  # read per request; past it the caller narrows the window


class TooMany(Exception):
    """More points than one request reads."""


def _bucket_start(moment: datetime, interval: str) -> datetime:
    moment = moment.astimezone(UTC)
    if interval == "day":
        return datetime.combine(moment.date(), time.min, tzinfo=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket_count(start: datetime, end: datetime, interval: str) -> int:
    first = _bucket_start(start, interval)
    return max(1, -(-(end - first) // INTERVALS[interval]))


def _group_of(field: str | None, row: dict) -> str | None:
    if field is None:
        return None
    if field == "user":
        return row["user_email"] or row["user_id"]
    if field.startswith(ATTRIBUTE_PREFIX):
        value = (row["attributes"] or {}).get(field[len(ATTRIBUTE_PREFIX) :])
        return "" if value is None else str(value)
    return row[METRIC_FIELDS[field]]


def metric_series(
    *,
    name: str,
    start: datetime,
    end: datetime,
    interval: str,
    group_by: str | None,
    filters: dict[str, set[str]],
) -> dict:
    """One metric's values in [start, end) by `interval` buckets, per value of
    `group_by`: counters and histograms (their sum) add up what each bucket's points
    added (a cumulative series' rises), gauges average their points. `filters` maps a
    field (METRIC_FIELDS, "user" or "attr.<key>") to the values it may have. Call inside
    the tenant's scope."""
    query = MetricPoint.objects.filter(name=name, time__gte=start, time__lt=end)
    for key, values in filters.items():
        if key == "user":
            query = query.filter(Q(user_email__in=values) | Q(user_id__in=values))
        elif key in METRIC_FIELDS:
            query = query.filter(**{f"{METRIC_FIELDS[key]}__in": values})
    columns = ("series", "time", "kind", "value", "cumulative", "start_ns", "unit",
               "attributes", *METRIC_FIELDS.values())  # fmt: skip
    rows = list(query.order_by("series", "time").values(*columns)[: MAX_POINTS + 1])
    if len(rows) > MAX_POINTS:
        raise TooMany(f"more than {MAX_POINTS} points: narrow since/until or filter")
    attribute_filters = {
        f[len(ATTRIBUTE_PREFIX) :]: v for f, v in filters.items() if f.startswith(ATTRIBUTE_PREFIX)
    }
    first = _bucket_start(start, interval)
    step = INTERVALS[interval]
    buckets = [first + i * step for i in range(bucket_count(start, end, interval))]
    sums: dict = defaultdict(lambda: [0.0] * len(buckets))
    counts: dict = defaultdict(lambda: [0] * len(buckets))
    rises = Rises(start)
    kinds, units = set(), set()
    for row in rows:
        added = rises.of(row["series"], row["value"], row["cumulative"], row["start_ns"])
        attrs = row["attributes"] or {}
        if any(str(attrs.get(k, "")) not in v for k, v in attribute_filters.items()):
            continue
        kinds.add(row["kind"])
        units.add(row["unit"])
        at = (_bucket_start(row["time"], interval) - first) // step
        group = _group_of(group_by, row)
        if row["kind"] == MetricKind.GAUGE:
            sums[group][at] += row["value"]
        else:
            sums[group][at] += added
        counts[group][at] += 1
    gauge = kinds == {MetricKind.GAUGE}
    series = []
    for group in sorted(sums, key=lambda g: "" if g is None else g):
        values = sums[group]
        if gauge:
            values = [v / c if c else None for v, c in zip(values, counts[group], strict=True)]
        series.append(
            {"group": group, "values": [None if v is None else round(v, 9) for v in values]}
        )
    return {
        "aggregation": "avg" if gauge else "sum",
        "unit": units.pop() if len(units) == 1 else "",
        "buckets": [b.isoformat() for b in buckets],
        "series": series,
    }
