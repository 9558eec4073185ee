"""Replay's writes: a run's events, and a member resolving a tool call in doubt."""

from django.db import transaction
from django.utils import timezone

from controlplane.services import Actor, ServiceError, audit_record
from execution import services as execution_services
from execution.models import Run, RunStatus
from replay import selectors
from replay.models import JournalStep, RunEvent, RunEventKind, RunLink, RunLinkKind


def journal_delete(*, run: Run) -> int:
    """Delete one run's journal (its sealed requests and results); the run stays. The
    conversations its LLM steps refer to live in the span path, under its retention."""
    return run_journal_delete(run_ids=[run.pk])


def run_event_record(*, run: Run, kind: str, detail: dict | None = None) -> RunEvent:
    return RunEvent.all_tenants.create(
        tenant_id=run.tenant_id, run_id=run.pk, kind=kind, detail=detail or {}
    )


def run_takeover_record(*, run: Run, lost_worker: str, was: str) -> None:
    """A run taken up again: the worker it lost (if it was running) and the resume."""
    if was == RunStatus.RUNNING:
        run_event_record(run=run, kind=RunEventKind.WORKER_LOST, detail={"worker": lost_worker})
    recorded = JournalStep.all_tenants.filter(run_id=run.pk).count()
    run_event_record(
        run=run,
        kind=RunEventKind.RESUMED,
        detail={"worker": run.lease_owner, "attempt": run.attempts, "journaled_steps": recorded},
    )


RECONCILE_ACTIONS = ("result", "retry", "fail")


def _who(actor: Actor) -> str:
    if actor.user is not None:
        return actor.user.get_username()
    if actor.api_key is not None:
        return f"key {actor.api_key.name}"
    return "system"


@transaction.atomic
def run_reconcile(*, run: Run, action: str, result=None, is_error: bool = False, actor: Actor):
    """Say how the tool call in doubt ended: `result` (it happened, and answered this),
    `retry` (it did not happen: call it again, same idempotency key) or `fail` (fail the
    run). The run goes on from its journal, as after a crash."""
    if action not in RECONCILE_ACTIONS:
        raise ServiceError(f"action must be one of {list(RECONCILE_ACTIONS)}")
    locked = Run.objects.select_for_update().filter(pk=run.pk).first()
    if locked is None or locked.status != RunStatus.NEEDS_RECONCILIATION:
        raise ServiceError(f"run {run.pk} is not waiting for reconciliation ({run.status})")
    step = JournalStep.objects.filter(run=run, done=False).order_by("step").first()
    detail = {"action": action, "step": step.step if step else None, "by": _who(actor)}
    if step is not None and action == "result":
        step.result = result
        step.is_error, step.done = bool(is_error), True
        step.save(update_fields=["result", "is_error", "done"])
    elif step is not None and action == "retry":
        step.delete()  # the resumed agent makes the call again, live
    if action == "fail":
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            error=f"failed while reconciling step {detail['step']} ({detail['by']})",
            finished_at=timezone.now(),
        )
    else:
        Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, lease_owner="")
        execution_services.run_enqueue(run=run)
    run_event_record(run=run, kind=RunEventKind.RECONCILED, detail=detail)
    audit_record(tenant=run.tenant, actor=actor, action="run.reconcile", target=run, data=detail)
    run.refresh_from_db()
    return run


def run_in_doubt_record(*, run_id: int, step, tool: str, args: dict) -> None:
    """The worker found a non-idempotent call in doubt: what a member is shown."""
    run = Run.all_tenants.only("pk", "tenant_id").get(pk=run_id)
    run_event_record(
        run=run,
        kind=RunEventKind.IN_DOUBT,
        detail={
            "tool": tool,
            # An event is readable as it is stored: redacted, unlike the journal.
            "arguments": selectors.journal_redacted(
                tenant_id=run.tenant_id, value=args.get("arguments")
            ),
            "idempotency_key": step.idempotency_key(run_id),
            "request_hash": step.request_hash,
            "occurrence": step.occurrence,
        },
    )


def run_divergence_record(*, run_id: int, report: dict) -> None:
    """A replay asked what its source never did: the report, on its link and as an event."""
    RunLink.all_tenants.filter(run_id=run_id).update(
        divergence=execution_services.json_safe(report)
    )
    run = Run.all_tenants.only("pk", "tenant_id").get(pk=run_id)
    run_event_record(run=run, kind=RunEventKind.DIVERGED, detail={"step": report["step"]})


class SourceBusy(ServiceError):
    """The run has not ended: its journal is still being written."""


def _derived_run(*, source: Run, version: int | None, actor: Actor, **link) -> Run:
    if source.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise SourceBusy(f"run {source.pk} is still {source.status}: wait until it ends")
    run = execution_services.run_create(
        tenant=source.tenant,
        agent=source.agent,
        version=version or source.version.version,
        input=source.input,
        limits=source.limits,
        actor=actor,
    )
    # In the same transaction as the run: its worker starts only once both are committed.
    RunLink.objects.create(tenant=source.tenant, run=run, source=source, **link)
    return run


@transaction.atomic
def run_replay_create(*, source: Run, version: int | None = None, actor: Actor) -> Run:
    """A new run of the source's agent (its version, or `version`) whose every call is
    answered from the source's journal; it stops as `diverged` at the first call the
    source did not make."""
    return _derived_run(source=source, version=version, actor=actor, kind=RunLinkKind.REPLAY)


@transaction.atomic
def run_fork_create(
    *, source: Run, step: int, result=None, request=None, version: int | None = None, actor: Actor
) -> Run:
    """A new run answered from the source's journal before `step`, with `step` given
    `result` (or run live with `request` merged over the recorded one), live after it."""
    if (result is None) == (request is None):
        raise ServiceError("a fork needs one of result or request")
    if request is not None and not isinstance(request, dict):
        raise ServiceError("request must be an object of the fields to change")
    if not JournalStep.objects.filter(run=source, step=step, done=True).exists():
        raise ServiceError(f"step: run {source.pk} has no step {step}")
    override = {"result": result} if request is None else {"request": request}
    return _derived_run(
        source=source,
        version=version,
        actor=actor,
        kind=RunLinkKind.FORK,
        fork_step=step,
        override=execution_services.json_safe(override),
    )


def run_journal_delete(*, run_ids: list[int]) -> int:
    """Delete the journals of runs whose traces retention removes (their steps hold
    LLM responses and tool results whole). The runs themselves stay, with their
    status and costs. Returns how many steps went."""
    deleted, _ = JournalStep.objects.filter(run_id__in=run_ids).delete()
    return deleted
