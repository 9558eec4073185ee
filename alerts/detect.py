"""Detection over one batch of newly stored spans: read the spans once, update each
trace's small state (TraceWatch) and the error windows, and hand findings to
services.alert_raise, which keeps one incident per cause.

Only detectors some rule of the tenant uses run, so a tenant without rules pays one
query per batch and nothing else.
"""

import statistics
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from alerts import detectors, services
from alerts.models import AlertRule, Detector, ErrorWindow
from controlplane.tenancy import tenant_scope
from tracing import labels
from tracing.models import StatusCode, Trace
from tracing.selectors import PayloadReader, span_detail_unpack, span_values_by_key

SPAN_DETECTORS = {
    Detector.LOOP,
    Detector.HALLUCINATED_TOOL,
    Detector.ERROR_BURST,
    Detector.COST_SPIKE,
}
TOOL_OPERATIONS = ("execute_tool",)
LLM_OPERATIONS = ("chat", "text_completion", "generate_content")


@dataclass(slots=True)
class Row:
    """What detection reads of a stored span: read as values, its detail unpacked once."""

    trace_id: uuid.UUID
    span_id: int
    hex: str  # the span id as the API and the watches name it, made once
    start_ns: int
    error: bool
    run_id: str
    name: str
    label: dict
    detail: dict


def spans_detect(*, tenant_id: int, spans: list[tuple[str, str]]) -> int:
    """Run the tenant's detectors over newly stored spans; returns alerts raised.

    A batch costs a fixed number of queries whatever its traces and agents: the rules,
    the spans (by key: never a trace's earlier spans), labels, traces, the watches (one
    upsert, one locked read, one update), for hallucinated tool calls the payloads (the
    responses, then their long strings), for cost spikes one statement for the traces
    (the agents' recent traces' costs and the batch's) and, when the batch's traces
    name sessions, one for the sessions, and for error bursts one upsert and one read."""
    with tenant_scope(tenant_id):
        rules = list(AlertRule.objects.all())
        wanted = {r.detector for r in rules}
        if not wanted & SPAN_DETECTORS:
            return 0
        grouped = _rows(tenant_id, spans)
        traces = {
            t[0]: t[1:]
            for t in Trace.objects.filter(trace_id__in=grouped).values_list(
                "trace_id", "agent_name", "run_id", "session_id"
            )
        }
        fresh: dict[uuid.UUID, list[Row]] = {}
        loops: dict[uuid.UUID, list] = {}
        with transaction.atomic():
            watches = services.trace_watches_lock(
                tenant_id=tenant_id, trace_ids=[t.hex for t in grouped]
            )
            for trace_id, rows in grouped.items():
                watch = watches[trace_id.hex]
                if detectors.batch_seen(watch.state, [r.hex for r in rows]):
                    continue  # a redelivered task: this batch was counted already
                fresh[trace_id] = rows
                if Detector.LOOP in wanted:
                    calls = [c for r in rows if (c := _call(r))]
                    # A loop is one incident per trace and call.
                    loops[trace_id] = [
                        f.with_cause(f"loop:{trace_id.hex}:{f.cause[5:]}")
                        for f in detectors.loop_scan(
                            watch.state, calls, retry_budget=settings.ALERTS_RETRY_BUDGET
                        )
                    ]
            services.trace_watches_save(watches=list(watches.values()))
        agents = {
            trace_id: (traces.get(trace_id, ("", "", ""))[0] or _agent(rows))
            for trace_id, rows in fresh.items()
        }
        hallucinations = (
            _hallucinations(tenant_id, [r for rows in fresh.values() for r in rows])
            if Detector.HALLUCINATED_TOOL in wanted
            else {}
        )
        spikes = (
            _cost_spikes(tenant_id, {t: a for t, a in agents.items() if a}, fresh)
            if Detector.COST_SPIKE in wanted
            else {}
        )
        if Detector.COST_SPIKE in wanted:
            sessions = {
                trace_id: session
                for trace_id in fresh
                if agents[trace_id] and (session := traces.get(trace_id, ("", "", ""))[2])
            }
            for trace_id, finding in _session_spikes(tenant_id, agents, sessions, fresh).items():
                spikes.setdefault(trace_id, []).append(finding)
        raised = 0
        for trace_id, rows in fresh.items():
            findings = [(Detector.LOOP, f) for f in loops.get(trace_id, [])]
            findings += [(Detector.HALLUCINATED_TOOL, f) for f in hallucinations.get(trace_id, [])]
            findings += [(Detector.COST_SPIKE, f) for f in spikes.get(trace_id, [])]
            run_id = traces.get(trace_id, ("", "", ""))[1] or next(
                (r.run_id for r in rows if r.run_id), ""
            )
            for detector, finding in findings:
                raised += services.findings_raise(
                    rules=rules,
                    detector=detector,
                    finding=finding,
                    agent=agents[trace_id],
                    trace_id=trace_id.hex,
                    run_id=run_id,
                )
        if Detector.ERROR_BURST in wanted and fresh:
            raised += _error_bursts(tenant_id, rules, [r for rows in fresh.values() for r in rows])
        return raised


def _rows(tenant_id: int, spans: list[tuple[str, str]]) -> dict[uuid.UUID, list[Row]]:
    """The batch's spans by trace, in start order: one query for the spans (by key),
    one for their labels."""
    trace_ids = {t: uuid.UUID(hex=t) for t in {t for t, _ in spans}}  # a few traces, many spans
    keys = list(
        dict.fromkeys(
            (trace_ids[trace_hex], int.from_bytes(bytes.fromhex(span_hex), "big", signed=True))
            for trace_hex, span_hex in spans
        )
    )
    found = span_values_by_key(
        tenant_id=tenant_id,
        keys=keys,
        fields=(
            "trace_id", "span_id", "start_ns", "status_code", "run_id", "name", "labels",
            "detail_packed",
        ),
    )  # fmt: skip
    values = labels.values_of(tenant_id, {v[6] for v in found})
    grouped: dict[uuid.UUID, list[Row]] = defaultdict(list)
    for trace_id, span_id, start_ns, status, run_id, name, labels_id, packed in found:
        grouped[trace_id].append(
            Row(
                trace_id,
                span_id,
                _hex(span_id),
                start_ns,
                status == StatusCode.ERROR,
                run_id,
                name or "",
                values[labels_id],
                span_detail_unpack(tenant_id=tenant_id, packed=packed),
            )  # fmt: skip
        )
    return grouped


def _hex(span_id: int) -> str:
    return span_id.to_bytes(8, "big", signed=True).hex()


def _agent(rows: list[Row]) -> str:
    return next((r.label["agent_name"] for r in rows if r.label["agent_name"]), "")


def _call(row: Row) -> detectors.Call | None:
    operation = row.label["operation"]
    if operation not in TOOL_OPERATIONS and operation not in LLM_OPERATIONS:
        return None
    refs = row.detail.get("refs", {})
    if operation in TOOL_OPERATIONS:
        name = row.label["tool_name"] or row.name or "tool"
        tool = row.detail.get("tool", {})
        if "gen_ai.tool.call.arguments" in tool:
            arguments = detectors.canonical(tool["gen_ai.tool.call.arguments"])
        elif "gen_ai.tool.call.arguments" in refs:  # a large value: its digest names it
            arguments = str(refs["gen_ai.tool.call.arguments"]).encode()
        else:
            # Arguments not recorded (Claude Code's default leaves them out): three
            # reads may be of three files, so the call cannot be compared.
            return None
        key = detectors.call_key(name, arguments)
        return detectors.Call(row.hex, row.start_ns, "tool", name, key, row.error)
    if "in" not in refs:
        return None  # a request whose messages were not recorded cannot be compared
    model = row.label["request_model"]
    key = detectors.call_key(model, refs.get("in"), refs.get("sys"))
    return detectors.Call(row.hex, row.start_ns, "llm", model or "llm", key, row.error)


TOOL_LIST_PREFIXES = ("gen_ai.tool.definitions", "llm.tools.", "llm.request.functions.")


def _hallucinations(tenant_id: int, rows: list[Row]) -> dict:
    """Findings by trace, for the batch's LLM spans. Reads only what the check needs,
    for the whole batch at once: the tool lists and responses of the requests that
    declared tools (one fetch), and nothing for a request that declared none. A tool
    list is parsed once however many spans send it (a trace's requests repeat it)."""
    candidates = []
    for row in rows:
        if row.label["operation"] not in LLM_OPERATIONS:
            continue
        refs = row.detail.get("refs", {})
        if "out" not in refs:
            continue
        attributes = row.detail.get("attributes", {})
        listed = {k: v for k, v in attributes.items() if k.startswith(TOOL_LIST_PREFIXES)}
        large = {k: d for k, d in refs.items() if k.startswith(TOOL_LIST_PREFIXES)}
        if listed or large:
            candidates.append((row, refs["out"], listed, large))
    if not candidates:
        return {}
    reader = PayloadReader(tenant_id)
    reader.fetch(
        [d for _, _, _, large in candidates for d in large.values()]
        + [d for _, out, _, _ in candidates for d in out]
    )
    # Only the responses' tool calls are read: their text is never fetched.
    responses = iter(
        reader.message_parts([d for _, out, _, _ in candidates for d in out], types=("tool_call",))
    )
    parsed: dict[bytes, detectors.Tools | None] = {}
    found = defaultdict(list)
    for row, out, listed, large in candidates:
        calls = [{"parts": next(responses)} for _ in out]
        # Large lists are named by their digests; small ones by their text.
        key = detectors.canonical(
            sorted({**listed, **{k: f"@{d}" for k, d in large.items()}}.items())
        )
        if key not in parsed:
            parsed[key] = detectors.tool_definitions(
                {**listed, **{k: reader.value(d) for k, d in large.items()}}
            )
        tools = parsed[key]
        if tools is not None:
            found[row.trace_id] += detectors.hallucination_scan(row.hex, tools, calls)
    return found


def _cost_spikes(
    tenant_id: int, agents: dict[uuid.UUID, str], fresh: dict
) -> dict[uuid.UUID, list[detectors.Finding]]:
    """Traces of the batch costing more than their agent's recent median, in one
    statement whatever the batch's traces and agents: the costs of each agent's last
    ALERTS_COST_SAMPLE other traces and of the batch's traces (billing costs spans in
    the step before this one where both share a queue, else in a task of its own,
    which may not have run for this batch yet: the trace's next batch judges it
    again)."""
    if not agents:
        return {}
    mine, others = _costs_split(
        _trace_costs(tenant_id, sorted(set(agents.values())), batch=list(agents))
    )
    spikes = {}
    for trace_id, agent in agents.items():
        cost = mine.get(trace_id, 0)
        median = _median(cost, others.get(agent, []))
        if median is None:
            continue
        spikes[trace_id] = [
            detectors.Finding(
                cause=f"cost_spike:{trace_id.hex}",
                span_id=fresh[trace_id][-1].hex,
                summary=f"trace cost {cost / 1e9:.4f} USD, {cost / median:.1f}x {agent}'s median",
                detail={"cost_usd": f"{cost / 1e9:.6f}", "median_usd": f"{median / 1e9:.6f}"},
                count=cost / median,
            )
        ]
    return spikes


def _costs_split(found) -> tuple[dict, dict[str, list[int]]]:
    """(subject, agent or None, total) rows as the batch's subjects' costs and each
    agent's sample of its recent other subjects' costs."""
    mine: dict = {}
    others: dict[str, list[int]] = defaultdict(list)
    for subject, agent, total in found:
        total = int(total or 0)  # PostgreSQL sums a bigint as a numeric
        if agent is None:
            mine[subject] = total
        elif total:
            others[agent].append(total)
    return mine, others


def _median(cost: int, sample: list[int]) -> float | None:
    """The sample's median when there is a cost to compare and enough to compare with."""
    if cost <= 0 or len(sample) < settings.ALERTS_COST_MIN_SAMPLES:
        return None
    return statistics.median(sample) or None


# A session spans many traces: the agent's recent sessions are those of its last
# SESSION_WALK traces that name one (an index walk that stops there), the newest
# ALERTS_COST_SAMPLE of them.
SESSION_WALK = 200


def _session_spikes(
    tenant_id: int, agents: dict[uuid.UUID, str], sessions: dict[uuid.UUID, str], fresh: dict
) -> dict[uuid.UUID, detectors.Finding]:
    """Sessions of the batch whose total so far (billing's CostTotal for the session)
    is more than the rule's multiple of the median total of their agent's recent other
    sessions, in one statement. One incident per session; the alert names the session
    and the batch's last LLM span of it (the batch that took it over; a batch judged
    before billing costed it is judged again with the session's next)."""
    if not sessions:
        return {}
    by_session: dict[str, tuple[str, uuid.UUID]] = {}
    for trace_id, session in sessions.items():
        by_session[session] = (agents[trace_id], trace_id)  # the batch's last trace of it
    mine, others = _costs_split(
        _session_costs(
            tenant_id, sorted({a for a, _ in by_session.values()}), batch=sorted(by_session)
        )
    )
    spikes = {}
    for session, (agent, trace_id) in by_session.items():
        cost = mine.get(session, 0)
        median = _median(cost, others.get(agent, []))
        if median is None:
            continue
        rows = fresh[trace_id]
        span = next((r for r in reversed(rows) if r.label["operation"] in LLM_OPERATIONS), rows[-1])
        spikes[trace_id] = detectors.Finding(
            cause=f"cost_spike:session:{session}",
            span_id=span.hex,
            summary=f"session {session} cost {cost / 1e9:.4f} USD, "
            f"{cost / median:.1f}x {agent}'s median session",
            detail={
                "session_id": session,
                "cost_usd": f"{cost / 1e9:.6f}",
                "median_usd": f"{median / 1e9:.6f}",
            },
            count=cost / median,
        )
    return spikes


def _session_costs(tenant_id: int, agents: list[str], *, batch: list[str]) -> list[tuple]:
    """(session, agent, cost) of each agent's recent sessions but the batch's, and
    (session, None, cost) of the batch's sessions, in one statement: per agent a walk
    of its last SESSION_WALK traces naming a session (the ORM's SQL, as in
    _trace_costs), their newest ALERTS_COST_SAMPLE sessions, joined to the sessions'
    totals."""
    from billing.models import CostTotal

    part, parts = _per_agent(
        lambda agent: (
            Trace.objects.filter(agent_name=agent)
            .exclude(session_id="")
            .exclude(session_id__in=batch)
            .order_by("-start_time")
            .values_list("session_id", "agent_name", "start_time")[:SESSION_WALK]
        ),
        agents,
    )
    limit = int(settings.ALERTS_COST_SAMPLE)
    sample = " UNION ALL ".join(
        f"SELECT * FROM (SELECT w{i}.session_id, w{i}.agent_name FROM ({part}) AS w{i} "  # noqa: S608 - the ORM's SQL, its values bound
        f"GROUP BY w{i}.session_id, w{i}.agent_name ORDER BY MAX(w{i}.start_time) DESC "
        f"LIMIT {limit}) AS a{i}"
        for i in range(len(parts))
    )
    totals = CostTotal._meta.db_table
    sql = (
        f"WITH s(session_id, agent) AS ({sample}) "  # noqa: S608 - the ORM's SQL and fixed names, values bound
        f"SELECT s.session_id, s.agent, c.cost_nusd FROM s JOIN {totals} c "
        "ON c.tenant_id = %s AND c.dimension = 'session' AND c.key = s.session_id "
        f"UNION ALL SELECT key, NULL, cost_nusd FROM {totals} WHERE tenant_id = %s "
        f"AND dimension = 'session' AND key IN ({', '.join(['%s'] * len(batch))})"
    )
    params = [p for ps in parts for p in ps] + [tenant_id, tenant_id, *batch]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_AGENT = "\x00agent"  # a name no agent has: where the agent's value is bound


def _per_agent(query_for, agents: list[str]) -> tuple[str, list[list]]:
    """The ORM's SQL of query_for(agent), compiled once, and each agent's parameters.
    The agents' queries differ only in the agent's name, so the SQL is made for a
    placeholder name and each agent's name is bound where the placeholder was:
    compiling the queryset once per agent was most of the cost-spike statements' time."""
    sql, params = query_for(_AGENT).query.sql_with_params()
    at = list(params).index(_AGENT)
    return sql, [[*params[:at], agent, *params[at + 1 :]] for agent in agents]


def _trace_costs(tenant_id: int, agents: list[str], *, batch: list[uuid.UUID]) -> list[tuple]:
    """(trace id, agent, cost) of each agent's last ALERTS_COST_SAMPLE traces but the
    batch's, and (trace id, None, cost) of the batch's traces, in one statement.

    The sample is a UNION ALL of one index walk (trace_recent) an agent, each stopping
    at its sample's size, built from the ORM's own SQL for each agent (Django cannot
    slice the parts of a compound on SQLite), joined to the costs by trace id. Not an
    `OR` of `IN (subquery)`, which SQLite answers by walking every trace and cost row
    of the tenant."""
    from billing.models import SpanCost

    part, parts = _per_agent(
        lambda agent: (
            Trace.objects.filter(agent_name=agent)
            .exclude(trace_id__in=batch)
            .order_by("-start_time")
            .values_list("trace_id", "agent_name")[: settings.ALERTS_COST_SAMPLE]
        ),
        agents,
    )
    trace_field = Trace._meta.get_field("trace_id")
    sample = " UNION ALL ".join(
        f"SELECT * FROM ({part}) AS a{i}"  # noqa: S608 - the ORM's SQL, its values bound
        for i in range(len(parts))
    )
    costs = SpanCost._meta.db_table
    sql = (
        f"WITH s(trace_id, agent) AS ({sample}) "  # noqa: S608 - the ORM's SQL and fixed names, values bound
        f"SELECT c.trace_id, s.agent, SUM(c.cost_nusd) FROM s JOIN {costs} c "
        "ON c.tenant_id = %s AND c.trace_id = s.trace_id AND c.counted GROUP BY c.trace_id, s.agent "
        f"UNION ALL SELECT trace_id, NULL, SUM(cost_nusd) FROM {costs} WHERE tenant_id = %s "
        f"AND counted AND trace_id IN ({', '.join(['%s'] * len(batch))}) GROUP BY trace_id"
    )
    params = [p for ps in parts for p in ps]
    params += [tenant_id, tenant_id, *(trace_field.get_db_prep_value(t, connection) for t in batch)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(trace_field.to_python(t), agent, total) for t, agent, total in cursor.fetchall()]


def _error_bursts(tenant_id: int, rules, rows: list[Row]) -> int:
    """Count calls and errors per agent and tool and minute; raise where the window's
    error rate passes a rule's threshold."""
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        label = row.label
        minute = row.start_ns // 60_000_000_000
        error = int(row.error)
        subjects = []
        if label["agent_name"] and label["operation"] in TOOL_OPERATIONS + LLM_OPERATIONS:
            subjects.append(f"agent:{label['agent_name']}")
        if label["operation"] in TOOL_OPERATIONS and label["tool_name"]:
            subjects.append(f"tool:{label['tool_name']}")
        for subject in subjects:
            counts[(subject, minute)][0] += 1
            counts[(subject, minute)][1] += error
    if not counts:
        return 0
    services.error_windows_add(
        tenant_id=tenant_id,
        counts={key: (calls, errors) for key, (calls, errors) in counts.items()},
    )
    window = settings.ALERTS_ERROR_WINDOW_MINUTES
    raised = 0
    newest = {}
    for subject, minute in counts:
        newest[subject] = max(minute, newest.get(subject, minute))
    # One read of every subject's windows; each subject's sum is over its own newest
    # minute's window.
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    recent = ErrorWindow.objects.filter(
        subject__in=newest, minute__gt=min(newest.values()) - window
    ).values_list("subject", "minute", "calls", "errors")
    for subject, minute, calls, errors in recent:
        if newest[subject] - window < minute <= newest[subject]:
            totals[subject][0] += calls
            totals[subject][1] += errors
    for subject in newest:
        calls, errors = totals[subject]
        if calls < settings.ALERTS_ERROR_MIN_CALLS:
            continue
        agent = subject[len("agent:") :] if subject.startswith("agent:") else ""
        finding = detectors.Finding(
            cause=f"error_burst:{subject}",
            span_id="",
            summary=f"{subject}: {errors} of {calls} calls failed in {window} minutes",
            detail={"subject": subject, "calls": calls, "errors": errors, "minutes": window},
            count=errors / calls,
        )
        raised += services.findings_raise(
            rules=rules, detector=Detector.ERROR_BURST, finding=finding, agent=agent,
            trace_id="", run_id="", tool_subject=subject.startswith("tool:"),
        )  # fmt: skip
    return raised


def budget_detect(*, tenant_id: int, event: dict) -> int:
    """Billing's threshold event as a finding: one incident per budget, window and
    threshold; a rule's threshold is the smallest fraction of the cap it cares about."""
    with tenant_scope(tenant_id):
        rules = list(
            AlertRule.objects.filter(detector=Detector.BUDGET).prefetch_related("endpoints")
        )
        if not rules:
            return 0
        threshold = float(event.get("threshold") or 0)
        figures = f"({event.get('spent_usd')} of {event.get('cap_usd')} USD, {event.get('window')})"
        if event.get("refused"):
            summary = (
                f"budget {event.get('budget_id')} reached its cap: a call was refused {figures}"
            )
        elif event.get("cap_reached"):
            summary = f"budget {event.get('budget_id')} reached its cap {figures}"
        else:
            summary = (
                f"budget {event.get('budget_id')} reached {threshold:.0%} of its cap {figures}"
            )
        finding = detectors.Finding(
            # The cap (1.0) is one incident per window, whether spend or a refusal got there.
            cause=f"budget:{event.get('budget_id')}:{event.get('window')}:{threshold}",
            span_id="",
            summary=summary,
            detail={k: v for k, v in event.items() if isinstance(v, str | int | float | None)},
            count=threshold,
        )
        run_id = event.get("run_id") or ""
        return services.findings_raise(
            rules=rules, detector=Detector.BUDGET, finding=finding,
            agent=event.get("agent") or "", trace_id="", run_id=str(run_id),
        )  # fmt: skip
