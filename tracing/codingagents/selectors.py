"""Reads for the coding-agents page: metric series over days, per-user figures, tool
acceptance, and the agents' sessions from the trace summaries. Call inside a tenant's
scope."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Max, Min, Sum

from tracing import labels
from tracing.codingagents import mapping
from tracing.codingagents.models import MetricPoint
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
    out, last = [], {}
    start_ns = int(start.timestamp() * 1e9)
    for series, moment, name, value, cumulative, series_start, email, user, model, attrs in rows:
        series = bytes(series)
        if cumulative:
            before = last.get(series)
            last[series] = value
            if before is None:
                # The series' first point in the window: all of it is the window's only
                # if the series started inside it.
                added = value if series_start >= start_ns else 0.0
            else:
                added = value - before if value >= before else value
        else:
            added = value
        out.append(Increase(name, moment.date(), added, email or user or "(unknown)", model, attrs))
    return out


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
