"""Managed execution's writes: the only code that writes agents, runs, the journal,
state, memory, tools, credentials and allowlists. The run itself is executed by
runner.Supervisor, which writes through the functions under "the worker's writes".

What a tenant does (create an agent, a version, a run, a tool; cancel a run; set a
credential; allow a host) writes an audit row. What a worker does on the run's behalf
(claim, lease, outcome, journal, state, memory, slow tool calls) does not: the run and
its journal are that record.
"""

import logging
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from controlplane.models import Tenant
from controlplane.services import Actor, ServiceError, audit_record
from execution import bundles, vault
from execution.budget import budget_hook
from execution.models import (
    Agent,
    AgentVersion,
    AllowedHost,
    Credential,
    MemoryItem,
    Run,
    RunState,
    RunStatus,
    StopReason,
    ToolCall,
    ToolDefinition,
)
from execution.tools import (
    BUILTIN_NAMES,
    ToolCallError,
    schema_problem,
    tool_execute,
    tool_lookup,
)
from execution.tools.egress import host_entry_problem
from replay.models import JournalStep
from replay.sealing import seal
from tracing.retention.storage import storage_count

if TYPE_CHECKING:
    from replay.journal import StepIdentity

log = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def json_safe(value):
    """`value` with NUL characters replaced: PostgreSQL's jsonb cannot hold them, and an
    agent's output or a tool's answer may contain anything."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    return value


# --- agents ------------------------------------------------------------------------------


@transaction.atomic
def agent_create(*, tenant: Tenant, name: str, description: str = "", actor: Actor) -> Agent:
    if Agent.objects.filter(name=name).exists():
        raise ServiceError(f"an agent named {name!r} already exists")
    agent = Agent.objects.create(tenant=tenant, name=name, description=description)
    audit_record(tenant=tenant, actor=actor, action="agent.create", target=agent)
    return agent


def agent_version_create(*, agent: Agent, filename: str, data: bytes, actor: Actor) -> AgentVersion:
    try:
        fmt, manifest = bundles.bundle_check(filename=filename, data=data)
    except bundles.BundleError as exc:
        raise ServiceError(str(exc)) from None
    known = set(BUILTIN_NAMES) | set(ToolDefinition.objects.values_list("name", flat=True))
    unknown = sorted(set(manifest["tools"]) - known)
    if unknown:
        raise ServiceError(
            f"flightdeck.toml names unknown tools {unknown} (built in: {list(BUILTIN_NAMES)}; "
            "define webhook tools at /api/v1/tools first)"
        )
    # Upload outside the transaction (S3 can take seconds) and before the row that
    # points at it commits.
    sha = bundles.bundle_store(tenant_id=agent.tenant_id, data=data, fmt=fmt)
    with transaction.atomic():
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        latest = AgentVersion.objects.filter(agent=agent).aggregate(m=Max("version"))["m"] or 0
        version = AgentVersion.objects.create(
            tenant_id=agent.tenant_id,
            agent=agent,
            version=latest + 1,
            bundle_sha256=sha,
            bundle_format=fmt,
            bundle_size=len(data),
            manifest=manifest,
        )
        audit_record(
            tenant=agent.tenant,
            actor=actor,
            action="agent.version.create",
            target=version,
            data={"agent": agent.name, "version": version.version, "sha256": sha},
        )
    # The bundle is stored bytes the tenant pays for from now, not from the next
    # retention run.
    storage_count(tenant_id=agent.tenant_id)
    return version


# --- runs --------------------------------------------------------------------------------


def run_limits(*, manifest: dict, requested: dict | None) -> dict:
    """Platform defaults, then the manifest's, then the request's; each within the maxima."""
    try:
        requested = bundles.check_limits(requested or {}, where="limits")
    except bundles.BundleError as exc:
        raise ServiceError(str(exc)) from None
    return {**settings.EXECUTION_DEFAULT_LIMITS, **manifest.get("limits", {}), **requested}


def _enqueue_run(run: Run) -> None:
    from execution import tasks

    def send():
        try:
            tasks.run_agent.apply_async(
                kwargs={"tenant_id": run.tenant_id, "run_id": run.pk},
                queue=settings.EXECUTION_QUEUE,
            )
        except Exception:  # noqa: BLE001 - the row is committed; beat re-enqueues it later
            log.exception("run %s could not be enqueued; requeue_lost_runs will retry", run.pk)

    transaction.on_commit(send)


def run_enqueue(*, run: Run) -> None:
    """Send the run to a worker once the current transaction commits."""
    _enqueue_run(run)


@transaction.atomic
def run_create(
    *, tenant: Tenant, agent: Agent, version: int | None, input, limits: dict | None, actor: Actor
) -> Run:
    versions = AgentVersion.objects.filter(agent=agent)
    found = (
        versions.filter(version=version).first()
        if version
        else versions.order_by("-version").first()
    )
    if found is None:
        raise ServiceError(
            f"agent {agent.name!r} has no version {version}"
            if version
            else f"agent {agent.name!r} has no versions yet"
        )
    problem = bundles.input_problem(found.manifest, input)
    if problem:
        raise ServiceError(f"the manifest of {agent.name} v{found.version} refuses this {problem}")
    run = Run.objects.create(
        tenant=tenant,
        agent=agent,
        version=found,
        input=input,
        limits=run_limits(manifest=found.manifest, requested=limits),
    )
    hook = budget_hook()
    if hook is not None:
        hook.admit(run=run)  # BudgetRefused leaves this transaction: no run is created
    audit_record(tenant=tenant, actor=actor, action="run.create", target=run)
    _enqueue_run(run)
    return run


def run_stop_request(*, run_id: int, reason: str) -> bool:
    """Stop a run for a reason of its own (loop, budget, alert): a queued run stops
    now, a running one at its next gateway call. False: it had finished."""
    now = timezone.now()
    if Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.STOPPED, stop_reason=reason, finished_at=now
    ):
        return True
    return bool(
        Run.objects.filter(pk=run_id, status=RunStatus.RUNNING, stop_requested="").update(
            stop_requested=reason
        )
    )


@transaction.atomic
def run_cancel(*, run: Run, actor: Actor) -> Run:
    now = timezone.now()
    stopped = Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.STOPPED, stop_reason=StopReason.CANCELLED, finished_at=now
    )
    if not stopped:
        # Running: the supervisor sees the flag within a second and kills the sandbox.
        flagged = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            cancel_requested=True
        )
        if not flagged:
            run.refresh_from_db()
            raise ServiceError(f"run {run.pk} has already finished ({run.status})")
    run.refresh_from_db()
    audit_record(tenant=run.tenant, actor=actor, action="run.cancel", target=run)
    return run


def _owner_gone(owner: str) -> bool:
    """True when `owner` is a worker process of this host that no longer exists: its
    lease need not be waited out (a SIGKILLed pool process is redelivered at once)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A process that has exited but is not reaped yet answers signal 0 like a live one.
    The pool hands a killed process's message back as soon as its sentinel pipe closes,
    often before it reaps the process: the redelivery then waited out the whole lease."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc here: alive, as far as can be told
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def run_claim(*, run_id: int, worker_id: str) -> Run | None:
    """Take the run if it is queued or its lease has expired (or its owner is a dead
    process of this host); None when another worker has it or it is finished (a
    duplicate delivery does nothing)."""
    from replay.services import run_takeover_record

    now = timezone.now()
    before = Run.objects.filter(pk=run_id).values("status", "lease_owner").first()
    if before is None:
        return None
    takeover = Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    if before["status"] == RunStatus.RUNNING and _owner_gone(before["lease_owner"]):
        takeover |= Q(status=RunStatus.RUNNING, lease_owner=before["lease_owner"])
    claimed = (
        Run.objects.filter(pk=run_id)
        .filter(Q(status=RunStatus.QUEUED, cancel_requested=False) | takeover)
        .update(
            status=RunStatus.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), Value(now)),
        )
    )
    if claimed != 1:
        return None
    run = Run.objects.select_related("agent", "version", "tenant").get(pk=run_id)
    if run.attempts > 1:
        run_takeover_record(run=run, lost_worker=before["lease_owner"], was=before["status"])
    return run


def run_lease_wait(*, run_id: int) -> float | None:
    """Seconds until the lease of a run another worker holds runs out (None if the run is
    not running): a redelivery after a worker's death comes back then."""
    expires = (
        Run.objects.filter(pk=run_id, status=RunStatus.RUNNING)
        .values_list("lease_expires_at", flat=True)
        .first()
    )
    if expires is None:
        return None
    return max(0.2, (expires - timezone.now()).total_seconds() + 0.2)


def run_execute(*, run_id: int, worker_id: str | None = None) -> float | None:
    """Run it; when another worker's lease holds it, the seconds until that lease runs
    out (the task asks again then: the owner may be dead), else None."""
    from execution.runner import Supervisor

    worker_id = worker_id or worker_identity()
    run = run_claim(run_id=run_id, worker_id=worker_id)
    if run is None:
        return run_lease_wait(run_id=run_id)
    if run.attempts > settings.EXECUTION_MAX_ATTEMPTS:
        # A run that kills its worker again and again must not loop forever.
        Run.objects.filter(pk=run.pk, lease_owner=worker_id).update(
            status=RunStatus.FAILED,
            error=f"the run's worker was lost {run.attempts - 1} times; giving up",
            finished_at=timezone.now(),
            lease_expires_at=None,
        )
        hook = budget_hook()
        if hook is not None:  # no worker will settle what the lost one held
            hook.reconcile(run_id=run.pk)
        return None
    Supervisor(run=run, worker_id=worker_id).execute()
    return None


def _lease_held(*, run_id: int, worker_id: str):
    return Run.objects.filter(pk=run_id, status=RunStatus.RUNNING, lease_owner=worker_id)


def runs_requeue_lost() -> int:
    """Re-enqueue runs whose worker died (lease expired) or whose message was lost
    (queued for long), each at most once a lease period: `requeued_at` records it, so
    a backlog does not multiply its own messages. Spans tenants: a platform job."""
    from replay.services import run_event_record

    now = timezone.now()
    stale_queue = now - timedelta(seconds=settings.EXECUTION_REQUEUE_QUEUED_AFTER_SECONDS)
    not_lately = Q(requeued_at__isnull=True) | Q(
        requeued_at__lt=now - timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
    )
    lost = (
        Run.objects.unscoped()
        .filter(
            Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
            | Q(status=RunStatus.QUEUED, created_at__lt=stale_queue)
        )
        .filter(not_lately)
    )
    count = 0
    for run in lost.only("pk", "tenant_id", "status")[:500]:
        # Conditional: two beat processes (or a slow one) re-enqueue a run once.
        if Run.objects.unscoped().filter(not_lately, pk=run.pk).update(requeued_at=now) != 1:
            continue
        run_event_record(run=run, kind="requeued", detail={"was": run.status})
        _enqueue_run(run)
        count += 1
    return count


def runs_hand_back(*, owners: list[str]) -> int:
    """Give back the runs these worker processes hold, at once, as their worker stops
    (SIGTERM): the lease ends now rather than running out, and each run is queued again
    so another worker takes it up from its journal within a second or two. The old
    supervisor finds its lease gone at its next renewal (within a second) and stops the
    sandbox without writing an outcome; a tool call it had out is repeated under the
    same idempotency key, as after a crash."""
    from replay.services import run_event_record

    now = timezone.now()
    count = 0
    held = Run.objects.unscoped().filter(status=RunStatus.RUNNING, lease_owner__in=owners)
    for run in held.only("pk", "tenant_id", "status", "lease_owner"):
        # Conditional: the run may have finished or been taken over since the read.
        if (
            Run.objects.unscoped()
            .filter(pk=run.pk, status=RunStatus.RUNNING, lease_owner=run.lease_owner)
            .update(lease_owner="", lease_expires_at=now, requeued_at=now)
            != 1
        ):
            continue
        run_event_record(
            run=run, kind="requeued", detail={"was": "running", "handed_back_by": run.lease_owner}
        )
        _enqueue_run(run)
        count += 1
    return count


# --- the worker's writes: the supervisor's and the gateway's -----------------------------


def run_trace_set(*, run: Run, trace_id: str) -> None:
    Run.objects.filter(pk=run.pk).update(trace_id=trace_id)


def run_lease_renew(*, run_id: int, worker_id: str, counters: dict) -> bool:
    """Extend this worker's lease and write the run's counters; False once another
    worker has taken the run over (or it has finished)."""
    expires = timezone.now() + timedelta(seconds=settings.EXECUTION_LEASE_SECONDS)
    renewed = _lease_held(run_id=run_id, worker_id=worker_id).update(
        lease_expires_at=expires, **counters
    )
    return renewed == 1


def run_finish(
    *,
    run_id: int,
    worker_id: str,
    status: str,
    reason: str,
    error: str,
    output,
    logs: str,
    counters: dict,
    limit_hits: dict | None = None,
) -> bool:
    """Write how the run ended, only while this worker holds the lease; False when it
    no longer does (the outcome is dropped: the run's new owner writes its own)."""
    waiting = status == RunStatus.NEEDS_RECONCILIATION  # not finished: it goes on later
    updated = _lease_held(run_id=run_id, worker_id=worker_id).update(
        status=status,
        stop_reason=reason,
        limit_hits=limit_hits or {},
        error=error.replace("\x00", ""),
        output=json_safe(output),
        logs=logs.replace("\x00", ""),
        finished_at=None if waiting else timezone.now(),
        lease_expires_at=None,
        **counters,
    )
    return updated == 1


# Every column but the id, in the model's order; the table and columns are constants and
# the values go as parameters.
_JOURNAL_FIELDS = [f for f in JournalStep._meta.concrete_fields if not f.primary_key]
# Fenced: a row goes in only while its writer still holds the run's lease (the last two
# parameters: the run and the owner), so a worker that handed the run back or was taken
# over cannot write a step its successor is also writing, nor journal a tool call's
# intent and then make the call.
_JOURNAL_INSERT = (
    f"INSERT INTO {JournalStep._meta.db_table} "  # noqa: S608
    f"({', '.join(f.column for f in _JOURNAL_FIELDS)}) "
    f"SELECT {', '.join(['%s'] * len(_JOURNAL_FIELDS))} "
    f"WHERE EXISTS (SELECT 1 FROM {Run._meta.db_table} WHERE id = %s AND lease_owner = %s)"
)


class LeaseLost(Exception):
    """This worker no longer holds the run: another has it, or it was handed back."""


def journal_step_values(
    *,
    tenant_id: int,
    run_id: int,
    step: "StepIdentity",
    kind: str,
    request,
    result,
    is_error: bool,
    duration_ms: float,
    done: bool = True,
) -> list:
    """One step's row as the journal INSERT's parameters; its request and result sealed
    with the tenant's journal key (replay/sealing.py: about 20 us a value), as raw bytes,
    so PostgreSQL's jsonb limits (no NUL) do not apply."""
    values = {
        "tenant_id": tenant_id,
        "run_id": run_id,
        "step": step.step,
        "kind": kind,
        "request_hash": step.request_hash,
        "occurrence": step.occurrence,
        "thread": step.thread,
        "thread_seq": step.thread_seq,
        "request": seal(tenant_id=tenant_id, value=request),
        "result": seal(tenant_id=tenant_id, value=result),
        "is_error": is_error,
        "done": done,
        "duration_ms": duration_ms,
        "created_at": timezone.now(),
    }
    return [f.get_db_prep_save(values[f.attname], connection) for f in _JOURNAL_FIELDS]


def journal_step_insert(*, owner: str, **step) -> None:
    """Insert one step (or, `done` False, a tool call's intent before it is made);
    committed when this returns (autocommit: one statement). Takes journal_step_values'
    arguments, and the lease's `owner`: LeaseLost when it no longer holds the run.

    Plain SQL through the fields' own adapters: this is on every gateway call's path,
    and the ORM's save() costs more than the insert itself. The run's counters are
    written by the supervisor once a second (run_lease_renew), not here.
    """
    with connection.cursor() as cursor:
        cursor.execute(_JOURNAL_INSERT, [*journal_step_values(**step), step["run_id"], owner])
        if cursor.rowcount != 1:
            raise LeaseLost


@transaction.atomic
def journal_steps_write(*, run_id: int, owner: str, rows: list[list]) -> None:
    """Insert rows made by journal_step_values, in one transaction; none of them (and
    LeaseLost) when `owner` no longer holds the run."""
    with connection.cursor() as cursor:
        cursor.executemany(_JOURNAL_INSERT, [[*row, run_id, owner] for row in rows])
        if cursor.rowcount != len(rows):
            raise LeaseLost  # and the transaction writes none of them


def journal_step_complete(
    *,
    owner: str,
    tenant_id: int,
    run_id: int,
    step: "StepIdentity",
    result,
    is_error: bool,
    duration_ms: float,
) -> None:
    """Write the result of a call whose intent was journaled (LeaseLost, and nothing
    written, when `owner` no longer holds the run)."""
    updated = JournalStep.objects.filter(
        run_id=run_id,
        request_hash=step.request_hash,
        occurrence=step.occurrence,
        run__lease_owner=owner,
    ).update(
        result=seal(tenant_id=tenant_id, value=result),
        is_error=is_error,
        done=True,
        duration_ms=duration_ms,
    )
    if updated != 1:
        raise LeaseLost


def run_state_set(*, tenant_id: int, run_id: int, key: str, value) -> None:
    RunState.objects.update_or_create(
        run_id=run_id, key=key, defaults={"value": json_safe(value), "tenant_id": tenant_id}
    )


def memory_item_put(*, tenant_id: int, agent_id: int, key: str, value, text: str = "") -> None:
    """Store one memory; `text` (or a string value) is what memory search matches."""
    value = json_safe(value)
    text = text or (value if isinstance(value, str) else "")
    MemoryItem.objects.update_or_create(
        agent_id=agent_id,
        key=key,
        defaults={
            "value": value,
            "text": json_safe(f"{key} {text}".lower()[:20000]),
            "tenant_id": tenant_id,
            "updated_at": timezone.now(),
        },
    )


def tool_call_create(
    *, tenant_id: int, run_id: int, tool: str, arguments: dict, idempotency_key: str = ""
) -> ToolCall:
    """Hand a slow tool call to the tools queue or this process's tool threads (sent
    once the row is committed)."""
    from execution import slowtools

    call = ToolCall.objects.create(
        tenant_id=tenant_id,
        run_id=run_id,
        tool=tool,
        arguments=arguments,
        idempotency_key=idempotency_key,
    )
    transaction.on_commit(
        lambda: slowtools.tool_call_send(tenant_id=tenant_id, tool_call_id=call.pk)
    )
    return call


def tool_call_execute(*, tool_call_id: int) -> None:
    """Run one queued slow tool call (the tools worker). Safe to run twice."""
    if ToolCall.objects.filter(pk=tool_call_id, status="queued").update(status="running") != 1:
        return  # done, or another delivery has it
    call = ToolCall.objects.get(pk=tool_call_id)
    spec = tool_lookup(name=call.tool)
    try:
        if spec is None:
            raise ToolCallError(f"unknown tool {call.tool!r}")
        value, attempts, used = tool_execute(
            spec=spec, arguments=call.arguments, idempotency_key=call.idempotency_key
        )
        result, is_error = {"value": value, "attempts": attempts, "answered_by": used}, False
    except ToolCallError as exc:
        result, is_error = {"message": str(exc), "attempts": exc.attempts}, True
    ToolCall.objects.filter(pk=tool_call_id).update(status="done", result=result, is_error=is_error)


# --- tools, credentials, allowlist -------------------------------------------------------


@transaction.atomic
def tool_definition_create(*, tenant: Tenant, actor: Actor, **fields) -> ToolDefinition:
    name = fields["name"]
    if name in BUILTIN_NAMES or ToolDefinition.objects.filter(name=name).exists():
        raise ServiceError(f"a tool named {name!r} already exists")
    problem = schema_problem(fields.get("schema") or {"type": "object"})
    if problem:
        raise ServiceError(f"schema: {problem}")
    if (
        fields.get("credential")
        and not Credential.objects.filter(name=fields["credential"]).exists()
    ):
        raise ServiceError(f"credential {fields['credential']!r} is not in the vault")
    tool = ToolDefinition.objects.create(tenant=tenant, **fields)
    audit_record(tenant=tenant, actor=actor, action="tool.create", target=tool, data={"name": name})
    return tool


@transaction.atomic
def credential_set(*, tenant: Tenant, name: str, value: str, actor: Actor) -> Credential:
    credential, created = Credential.objects.update_or_create(
        name=name, defaults={"tenant": tenant, "ciphertext": vault.encrypt(value)}
    )
    # The audit row names the credential, never its value.
    audit_record(
        tenant=tenant,
        actor=actor,
        action="credential.create" if created else "credential.update",
        target=credential,
        data={"name": name},
    )
    return credential


@transaction.atomic
def allowed_host_add(*, tenant: Tenant, host: str, actor: Actor) -> AllowedHost:
    host = host.strip().lower()
    problem = host_entry_problem(host)
    if problem:
        raise ServiceError(f"host: {problem}")
    allowed, _ = AllowedHost.objects.get_or_create(host=host, defaults={"tenant": tenant})
    audit_record(
        tenant=tenant, actor=actor, action="allowed_host.add", target=allowed, data={"host": host}
    )
    return allowed
