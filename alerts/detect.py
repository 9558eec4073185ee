"""Detection over one batch of newly stored spans: read the spans once, update each
trace's small state (TraceWatch) and the error windows, and hand findings to
services.alert_raise, which keeps one incident per cause.

Only detectors some rule of the tenant uses run, so a tenant without rules pays one
query per batch and nothing else.
"""

import statistics
import uuid
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from alerts import detectors, services
from alerts.models import AlertRule, Detector, ErrorWindow
from controlplane.tenancy import tenant_scope
from tracing import labels
from tracing.models import Span, StatusCode, Trace
from tracing.selectors import PayloadReader, span_stored_detail

SPAN_DETECTORS = {
    Detector.LOOP,
    Detector.HALLUCINATED_TOOL,
    Detector.ERROR_BURST,
    Detector.COST_SPIKE,
}
TOOL_OPERATIONS = ("execute_tool",)
LLM_OPERATIONS = ("chat", "text_completion", "generate_content")


def spans_detect(*, tenant_id: int, spans: list[tuple[str, str]]) -> int:
    """Run the tenant's detectors over newly stored spans; returns alerts raised.

    A batch costs a fixed number of queries whatever its traces: the rules, the spans
    (by key: never a trace's earlier spans), labels, traces, the watches (one upsert,
    one locked read, one update), and for error bursts one upsert and one read."""
    with tenant_scope(tenant_id):
        rules = list(AlertRule.objects.all())
        wanted = {r.detector for r in rules}
        if not wanted & SPAN_DETECTORS:
            return 0
        by_trace: dict[uuid.UUID, set[int]] = defaultdict(set)
        for trace_hex, span_hex in spans:
            by_trace[uuid.UUID(hex=trace_hex)].add(
                int.from_bytes(bytes.fromhex(span_hex), "big", signed=True)
            )
        rows = [
            s
            for s in Span.objects.filter(
                trace_id__in=by_trace, span_id__in={i for ids in by_trace.values() for i in ids}
            ).order_by("start_ns")
            if s.span_id in by_trace[s.trace_id]
        ]
        values = labels.values_of(tenant_id, {s.labels_id for s in rows})
        traces = {t.trace_id: t for t in Trace.objects.filter(trace_id__in=by_trace)}
        grouped = _group(rows)
        fresh_traces: dict[uuid.UUID, list] = {}
        loops: dict[uuid.UUID, list] = {}
        with transaction.atomic():
            watches = services.trace_watches_lock(
                tenant_id=tenant_id, trace_ids=[t.hex for t in grouped]
            )
            for trace_id, trace_rows in grouped.items():
                watch = watches[trace_id.hex]
                if detectors.batch_seen(watch.state, [_hex(s.span_id) for s in trace_rows]):
                    continue  # a redelivered task: this batch was counted already
                fresh_traces[trace_id] = trace_rows
                if Detector.LOOP in wanted:
                    calls = [c for s in trace_rows if (c := _call(s, values[s.labels_id]))]
                    # A loop is one incident per trace and call.
                    loops[trace_id] = [
                        f.with_cause(f"loop:{trace_id.hex}:{f.cause[5:]}")
                        for f in detectors.loop_scan(
                            watch.state, calls, retry_budget=settings.ALERTS_RETRY_BUDGET
                        )
                    ]
            services.trace_watches_save(watches=list(watches.values()))
        raised = 0
        costs = None
        hallucinations = (
            _hallucinations(
                tenant_id,
                [
                    s
                    for trace_rows in fresh_traces.values()
                    for s in trace_rows
                    if values[s.labels_id]["operation"] in LLM_OPERATIONS
                ],
            )
            if Detector.HALLUCINATED_TOOL in wanted
            else {}
        )
        for trace_id, trace_rows in fresh_traces.items():
            trace = traces.get(trace_id)
            agent = (trace.agent_name if trace else "") or _agent(values, trace_rows)
            findings = [(Detector.LOOP, f) for f in loops.get(trace_id, [])]
            findings += [(Detector.HALLUCINATED_TOOL, f) for f in hallucinations.get(trace_id, [])]
            if Detector.COST_SPIKE in wanted and agent:
                costs = costs or CostContext(by_trace)
                spike = _cost_spike(costs, trace_id, agent, trace_rows[-1], by_trace)
                findings += [(Detector.COST_SPIKE, spike)] if spike else []
            run_id = (trace.run_id if trace else "") or next(
                (s.run_id for s in trace_rows if s.run_id), ""
            )
            for detector, finding in findings:
                raised += services.findings_raise(
                    rules=rules,
                    detector=detector,
                    finding=finding,
                    agent=agent,
                    trace_id=trace_id.hex,
                    run_id=run_id,
                )
        if Detector.ERROR_BURST in wanted and fresh_traces:
            fresh = [s for trace_rows in fresh_traces.values() for s in trace_rows]
            raised += _error_bursts(tenant_id, rules, fresh, values)
        return raised


def _group(rows: list[Span]) -> dict:
    grouped = defaultdict(list)
    for s in rows:
        grouped[s.trace_id].append(s)
    return grouped


def _hex(span_id: int) -> str:
    return span_id.to_bytes(8, "big", signed=True).hex()


def _agent(values: dict, rows: list[Span]) -> str:
    return next(
        (values[s.labels_id]["agent_name"] for s in rows if values[s.labels_id]["agent_name"]), ""
    )


def _call(span: Span, label: dict) -> detectors.Call | None:
    operation = label["operation"]
    if operation not in TOOL_OPERATIONS and operation not in LLM_OPERATIONS:
        return None
    detail = span_stored_detail(span=span)
    refs = detail.get("refs", {})
    error = span.status_code == StatusCode.ERROR
    if operation in TOOL_OPERATIONS:
        name = label["tool_name"] or span.name or "tool"
        tool = detail.get("tool", {})
        if "gen_ai.tool.call.arguments" in tool:
            arguments = detectors.canonical(tool["gen_ai.tool.call.arguments"])
        else:  # a large value: its payload digest names its content
            arguments = str(refs.get("gen_ai.tool.call.arguments", "")).encode()
        return detectors.Call(
            _hex(span.span_id),
            span.start_ns,
            "tool",
            name,
            detectors.call_key(name, arguments),
            error,
        )
    if "in" not in refs:
        return None  # a request whose messages were not recorded cannot be compared
    model = label["request_model"]
    key = detectors.call_key(model, refs.get("in"), refs.get("sys"))
    return detectors.Call(_hex(span.span_id), span.start_ns, "llm", model or "llm", key, error)


TOOL_LIST_PREFIXES = ("gen_ai.tool.definitions", "llm.tools.", "llm.request.functions.")


def _hallucinations(tenant_id: int, spans: list[Span]) -> dict:
    """Findings by trace, for the batch's LLM spans. Reads only what the check needs,
    for the whole batch at once: the tool lists and responses of the requests that
    declared tools (one fetch), and nothing for a request that declared none."""
    candidates = []
    for span in spans:
        stored = span_stored_detail(span=span)
        refs = stored.get("refs", {})
        attributes = dict(stored.get("attributes", {}))
        large = [k for k in refs if k.startswith(TOOL_LIST_PREFIXES)]
        if "out" in refs and (large or any(k.startswith(TOOL_LIST_PREFIXES) for k in attributes)):
            candidates.append((span, refs, attributes, large))
    if not candidates:
        return {}
    reader = PayloadReader(tenant_id)
    reader.prefetch(
        [refs[k] for _, refs, _, large in candidates for k in large]
        + [d for _, refs, _, _ in candidates for d in refs["out"]]
    )
    found = defaultdict(list)
    for span, refs, attributes, large in candidates:
        attributes.update({k: reader.value(refs[k]) for k in large})
        tools = detectors.tool_definitions(attributes)
        if tools is not None:
            found[span.trace_id] += detectors.hallucination_scan(
                _hex(span.span_id), tools, reader.values(refs["out"])
            )
    return found


class CostContext:
    """Costs read once per batch: the batch's traces' and each agent's recent median
    (billing costs spans in a task of its own, which may not have run for this batch
    yet: the trace's next batch judges it again)."""

    def __init__(self, trace_ids):
        self.mine = _trace_costs(list(trace_ids))
        self.medians: dict[str, float | None] = {}

    def median(self, agent: str, batch) -> float | None:
        if agent not in self.medians:
            recent = list(
                Trace.objects.filter(agent_name=agent)
                .exclude(trace_id__in=batch)
                .order_by("-start_time")
                .values_list("trace_id", flat=True)[: settings.ALERTS_COST_SAMPLE]
            )
            others = [c for c in _trace_costs(recent).values() if c]
            enough = len(others) >= settings.ALERTS_COST_MIN_SAMPLES
            self.medians[agent] = statistics.median(others) if enough else None
        return self.medians[agent]


def _trace_costs(trace_ids: list) -> dict:
    from billing.models import SpanCost

    return dict(
        SpanCost.objects.filter(trace_id__in=trace_ids, counted=True)
        .values_list("trace_id")
        .annotate(total=Sum("cost_nusd"))
        .values_list("trace_id", "total")
    )


def _cost_spike(
    ctx: CostContext, trace_id, agent: str, last: Span, batch
) -> detectors.Finding | None:
    mine = ctx.mine.get(trace_id) or 0
    median = ctx.median(agent, batch) if mine > 0 else None
    if not median:
        return None
    return detectors.Finding(
        cause=f"cost_spike:{trace_id.hex}",
        span_id=_hex(last.span_id),
        summary=f"trace cost {mine / 1e9:.4f} USD, {mine / median:.1f}x {agent}'s median",
        detail={"cost_usd": f"{mine / 1e9:.6f}", "median_usd": f"{median / 1e9:.6f}"},
        count=mine / median,
    )


def _error_bursts(tenant_id: int, rules, spans: list[Span], values: dict) -> int:
    """Count calls and errors per agent and tool and minute; raise where the window's
    error rate passes a rule's threshold."""
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for s in spans:
        label = values[s.labels_id]
        minute = s.start_ns // 60_000_000_000
        error = int(s.status_code == StatusCode.ERROR)
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
        finding = detectors.Finding(
            cause=f"budget:{event.get('budget_id')}:{event.get('window')}:{threshold}",
            span_id="",
            summary=f"budget {event.get('budget_id')} reached {threshold:.0%} of its cap "
            f"({event.get('spent_usd')} of {event.get('cap_usd')} USD, {event.get('window')})",
            detail={k: v for k, v in event.items() if isinstance(v, str | int | float | None)},
            count=threshold,
        )
        run_id = event.get("run_id") or ""
        return services.findings_raise(
            rules=rules, detector=Detector.BUDGET, finding=finding,
            agent=event.get("agent") or "", trace_id="", run_id=str(run_id),
        )  # fmt: skip
