"""Replay's reads, under the caller's tenant scope."""

from django.db.models import QuerySet

from execution.models import Run
from replay.models import JournalStep, RunEvent, RunEventKind, RunLink


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
        "arguments": (step.request or {}).get("arguments"),
        "idempotency_key": detail.get("idempotency_key", ""),
        "journaled_at": step.created_at,
    }


def run_link_of(*, run_id: int) -> RunLink | None:
    """How the run was made from another one, if it was."""
    return RunLink.objects.filter(run_id=run_id).first()


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
