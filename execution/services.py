"""Managed execution's operations: the only code that writes agents, runs, tools,
credentials and allowlists. The run itself is executed by runner.Supervisor."""

import logging
import os
import socket
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from controlplane.models import Tenant
from controlplane.services import Actor, ServiceError, audit_record
from execution import bundles, vault
from execution.models import (
    Agent,
    AgentVersion,
    AllowedHost,
    Credential,
    Run,
    RunStatus,
    StopReason,
    ToolDefinition,
)
from execution.tools import BUILTIN_NAMES, schema_problem

log = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    return version


# --- runs --------------------------------------------------------------------------------


def run_limits(*, manifest: dict, requested: dict | None) -> dict:
    """Platform defaults, then the manifest's, then the request's; each within the maxima."""
    try:
        bundles.check_limits(requested or {}, where="limits")
    except bundles.BundleError as exc:
        raise ServiceError(str(exc)) from None
    return {**settings.EXECUTION_DEFAULT_LIMITS, **manifest.get("limits", {}), **(requested or {})}


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
    audit_record(tenant=tenant, actor=actor, action="run.create", target=run)
    _enqueue_run(run)
    return run


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


def run_claim(*, run_id: int, worker_id: str) -> Run | None:
    """Take the run if it is queued or its lease has expired; None when another worker
    has it or it is finished (a duplicate delivery does nothing)."""
    now = timezone.now()
    claimed = (
        Run.objects.filter(pk=run_id)
        .filter(
            Q(status=RunStatus.QUEUED, cancel_requested=False)
            | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        )
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
    return Run.objects.select_related("agent", "version", "tenant").get(pk=run_id)


def run_execute(*, run_id: int, worker_id: str | None = None) -> None:
    from execution.runner import Supervisor

    worker_id = worker_id or worker_identity()
    run = run_claim(run_id=run_id, worker_id=worker_id)
    if run is None:
        return
    if run.attempts > settings.EXECUTION_MAX_ATTEMPTS:
        # A run that kills its worker again and again must not loop forever.
        Run.objects.filter(pk=run.pk, lease_owner=worker_id).update(
            status=RunStatus.FAILED,
            error=f"the run's worker was lost {run.attempts - 1} times; giving up",
            finished_at=timezone.now(),
            lease_expires_at=None,
        )
        return
    Supervisor(run=run, worker_id=worker_id).execute()


def runs_requeue_lost() -> int:
    """Re-enqueue runs whose worker died (lease expired) or whose message was lost
    (queued for long). Spans tenants: a platform job."""
    now = timezone.now()
    stale_queue = now - timedelta(seconds=settings.EXECUTION_REQUEUE_QUEUED_AFTER_SECONDS)
    lost = Run.objects.unscoped().filter(
        Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        | Q(status=RunStatus.QUEUED, created_at__lt=stale_queue)
    )
    count = 0
    for run in lost.only("pk", "tenant_id")[:500]:
        _enqueue_run(run)
        count += 1
    return count


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
    if not host or "/" in host or " " in host:
        raise ServiceError(
            f"{host!r} is not a host (use api.example.com, *.example.com or host:port)"
        )
    allowed, _ = AllowedHost.objects.get_or_create(host=host, defaults={"tenant": tenant})
    audit_record(
        tenant=tenant, actor=actor, action="allowed_host.add", target=allowed, data={"host": host}
    )
    return allowed
