"""Managed execution's data: agents and their bundles, runs, and what the gateway
serves (tools, credentials, allowlists, state, memory, rate buckets)."""

from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel


class Agent(TenantModel):
    name = models.SlugField(max_length=100)
    description = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="agent_name_per_tenant")
        ]

    def __str__(self):
        return self.name


class AgentVersion(TenantModel):
    """One uploaded bundle. The archive lives in the blob store under its SHA-256."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    bundle_sha256 = models.CharField(max_length=64)
    bundle_format = models.CharField(max_length=8)  # "tar.gz" or "zip"
    bundle_size = models.PositiveIntegerField()
    manifest = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["agent", "version"], name="agent_version_unique")
        ]

    def __str__(self):
        return f"{self.agent_id} v{self.version}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    # A tool call was in doubt when its worker died and the tool is not idempotent: a
    # member says what happened (replay.services.run_reconcile) before the run goes on.
    NEEDS_RECONCILIATION = "needs_reconciliation"
    DIVERGED = "diverged"  # a replay whose agent asked something its source did not


class StopReason(models.TextChoices):
    CANCELLED = "cancelled"
    TIME = "time"
    CPU = "cpu"
    MEMORY = "memory"
    STEPS = "steps"
    TOOL_CALLS = "tool_calls"
    BUDGET = "budget"
    LOOP = "loop"
    ALERT = "alert"  # an alert rule with stop_run (alerts/)


FINISHED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.DIVERGED)


class Run(TenantModel):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="runs")
    version = models.ForeignKey(AgentVersion, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=32, choices=RunStatus.choices, default=RunStatus.QUEUED)
    stop_reason = models.CharField(
        max_length=16, choices=StopReason.choices, blank=True, default=""
    )
    error = models.TextField(blank=True, default="")
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    limits = models.JSONField(default=dict)  # effective limits, fixed at start
    step_count = models.PositiveIntegerField(default=0)
    tool_call_count = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    trace_id = models.CharField(max_length=32, blank=True, default="")
    logs = models.TextField(blank=True, default="")  # tail of the agent's stdout/stderr
    # The limits the run ran into, by name ("max_processes": forks refused, 1 for the
    # limit it was stopped for): a contained fork bomb leaves a record.
    limit_hits = models.JSONField(default=dict, blank=True)
    # Ownership: the worker that runs it renews the lease; an expired lease means the
    # worker died and the run may be taken up again (see services.run_claim).
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When beat last re-enqueued the run: at most once per lease period (runs_requeue_lost).
    requeued_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # A stop reason asked for from outside the run (an alert rule): the supervisor
    # stops the gateway with it, so the run's next gateway call is refused.
    stop_requested = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="run_tenant_recent"),
            models.Index(fields=["status", "lease_expires_at"], name="run_status_lease"),
        ]

    def __str__(self):
        return f"run {self.pk} ({self.status})"


class RunState(TenantModel):
    """ctx.state: per-run key/value kept in the database, so it survives a crash."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="state")
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="run_state_key")]


class MemoryItem(TenantModel):
    """ctx.memory: an agent's long-term memory across its runs, per tenant."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="memory")
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)
    text = models.TextField(blank=True, default="")  # what search matches against
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="memory_key")]


class Credential(TenantModel):
    """A secret for tools, Fernet-encrypted at rest (vault.py). Never sent to agents."""

    name = models.SlugField(max_length=100)
    ciphertext = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="credential_name_per_tenant")
        ]


class AllowedHost(TenantModel):
    """A host the tenant's tools may call: "api.example.com", "*.example.com" or with a port."""

    host = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "host"], name="allowed_host")]


class ToolDefinition(TenantModel):
    """A tenant-defined webhook tool: arguments are POSTed as JSON to `url`."""

    name = models.SlugField(max_length=64)
    description = models.CharField(max_length=500, blank=True, default="")
    url = models.URLField(max_length=500)
    schema = models.JSONField(default=dict)
    credential = models.CharField(max_length=100, blank=True, default="")
    credential_header = models.CharField(max_length=100, default="Authorization")
    credential_format = models.CharField(max_length=100, default="Bearer {}")
    slow = models.BooleanField(default=False)
    timeout_seconds = models.FloatField(default=10)
    fallback = models.CharField(max_length=64, blank=True, default="")
    rate_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # Declared by the tenant: the endpoint honours Idempotency-Key, so a call in doubt
    # after a crash may be sent again with the same key.
    idempotent = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="tool_name")]


class ToolCall(TenantModel):
    """A slow tool call handed to the tools queue; the run's gateway waits on this row."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="slow_tool_calls")
    tool = models.CharField(max_length=64)
    arguments = models.JSONField()
    idempotency_key = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=16, default="queued")  # queued, running, done
    result = models.JSONField(null=True)
    is_error = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
