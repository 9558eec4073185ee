"""Replay's reads, under the caller's tenant scope.

The journal's requests and results are read back opened (they are sealed at rest, see
sealing.py); what leaves here for a person or an API client is their readable form:
redacted by the span path's redactor, unless an admin asked for them whole.
"""

from collections import Counter
from collections.abc import Iterable

from django.db.models import QuerySet

from execution.models import Run
from replay.models import JournalStep, PlaygroundRun, RunEvent, RunEventKind, RunLink


def run_events(*, run: Run) -> QuerySet[RunEvent]:
    """What happened to the run besides its calls, oldest first."""
    return RunEvent.objects.filter(run=run).order_by("at", "id")


def run_in_doubt(*, run: Run) -> dict | None:
    """The call a member must settle: the journaled intent and what the worker saw."""
    step = JournalStep.objects.filter(run=run, done=False).order_by("step").first()
    if step is None:
        return None
    event = (
        RunEvent.objects.filter(run=run, kind=RunEventKind.IN_DOUBT).order_by("-at", "-id").first()
    )
    detail = event.detail if event else {}
    return {
        "step": step.step,
        "tool": (step.request or {}).get("name"),
        "arguments": journal_redacted(
            tenant_id=run.tenant_id, value=(step.request or {}).get("arguments")
        ),
        "idempotency_key": detail.get("idempotency_key", ""),
        "journaled_at": step.created_at,
    }


def run_link_of(*, run_id: int) -> RunLink | None:
    """How the run was made from another one, if it was."""
    return RunLink.objects.filter(run_id=run_id).select_related("source").first()


def run_lineage(*, run: Run) -> dict:
    link = run_link_of(run_id=run.pk)
    derived = RunLink.objects.filter(source=run).order_by("id")
    return {
        "source": link.source_id if link else None,
        "kind": link.kind if link else None,
        "fork_step": link.fork_step if link else None,
        "divergence": link.divergence if link else None,
        "derived": [{"run": d.run_id, "kind": d.kind} for d in derived[:200]],
    }


def journal_redacted(*, tenant_id: int, value):
    """`value` as the span path would store it: every string through the tenant's
    redactor (secrets, personal data, the tenant's own patterns)."""
    from tracing.ingest.policy import tenant_redaction

    return tenant_redaction(tenant_id).redactor.redact_value(value, Counter())


def steps_readable(
    steps: Iterable[JournalStep], *, tenant_id: int, unredacted: bool = False
) -> list[JournalStep]:
    """The steps with their requests and results in readable form (redacted unless
    `unredacted`, which the caller grants to admins who ask). The copies are marked so
    they cannot be saved over the journal."""
    steps = list(steps)
    if unredacted:
        return steps
    for step in steps:
        step.request = journal_redacted(tenant_id=tenant_id, value=step.request)
        step.result = journal_redacted(tenant_id=tenant_id, value=step.result)
        step.redacted = True
    return steps


def conversation_of(*, trace_id: str, reference) -> list | None:
    """The conversation an LLM step refers to (`{"span", "count", "sha256"}`), as its
    chat span holds it in the span path (redacted); None when the span is not there."""
    from tracing.query.filters import FilterError, parse_span_id, parse_trace_id
    from tracing.selectors import span_detail, span_get

    if not isinstance(reference, dict) or not reference.get("span") or not trace_id:
        return None
    try:
        span = span_get(
            span_id=parse_span_id(str(reference["span"])), trace_id=parse_trace_id(trace_id)
        )
    except FilterError:
        return None
    return span_detail(span=span)["input_messages"] if span is not None else None


def request_readable(
    *, tenant_id: int, op: str, args=None, journaled=None, trace_id: str = ""
) -> dict:
    """A request as a person reads it: redacted, an LLM call's conversation as messages.
    Either the call's `args` (a new call) or its `journaled` request with the run's
    trace, where the conversation is read back from the step's chat span."""
    from execution.gateway import journal_request
    from execution.spans import semconv_messages

    if args is not None:
        readable = journal_request(op, args)
        if op == "llm.messages" and isinstance(args.get("messages"), list):
            readable["messages"] = semconv_messages(args["messages"])
    else:
        readable = dict(journaled) if isinstance(journaled, dict) else {"value": journaled}
        if op == "llm.messages":
            messages = conversation_of(trace_id=trace_id, reference=readable.get("messages"))
            if messages is not None:
                readable["messages"] = messages
    return journal_redacted(tenant_id=tenant_id, value=readable)


def playground_runs_of(*, trace_id: str, span_id: str, limit: int = 50) -> list[PlaygroundRun]:
    """The playground's calls made from this span (hex ids), newest first."""
    rows = PlaygroundRun.objects.filter(source_trace_id=trace_id, source_span_id=span_id)
    return list(rows.order_by("-created_at", "-id")[:limit])


def playground_run_of_trace(*, trace_id: str) -> PlaygroundRun | None:
    """The playground call whose trace this is (hex id), if it is one."""
    return PlaygroundRun.objects.filter(trace_id=trace_id).first()
