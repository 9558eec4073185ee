"""The run's journal, and what replay adds to a run: its link to the run it replays or
forks, and the events of its life that are not calls (a worker lost, the run taken up
again, a call in doubt resolved, a divergence), and the playground's calls."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel
from replay.sealing import SealedJSONField


class JournalStep(TenantModel):
    """One crossing of the gateway, committed before the agent sees its result.

    `step` numbers the crossings in the order they arrived (for reading); the step's
    identity is (request_hash, occurrence): the n-th call of the run with this exact
    request, which does not depend on how the agent's threads were scheduled (see
    replay/README.md). `thread` and `thread_seq` say which of the agent's threads asked,
    and its own count of calls, so a replay can name the recorded call a new one stands for.
    """

    run = models.ForeignKey("execution.Run", on_delete=models.CASCADE, related_name="steps")
    step = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    request_hash = models.CharField(max_length=64)
    occurrence = models.PositiveIntegerField(default=1)
    thread = models.CharField(max_length=64, default="main")
    thread_seq = models.PositiveIntegerField(default=0)
    # Sealed with the tenant's journal key (sealing.py); readers show them redacted.
    request = SealedJSONField(null=True)
    result = SealedJSONField(null=True)
    # False while a tool with effects outside the run is being called: its intent is
    # journaled first, so a worker dying mid-call leaves the call visibly in doubt.
    done = models.BooleanField(default=True)
    is_error = models.BooleanField(default=False)
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["run", "step"], name="journal_step_unique"),
            models.UniqueConstraint(
                fields=["run", "request_hash", "occurrence"], name="journal_step_identity"
            ),
        ]

    def save(self, *args, **kwargs):
        # A selector's readable copy holds redacted values: saved, it would overwrite
        # the journal's real ones.
        if getattr(self, "redacted", False):
            raise ValueError("a redacted copy of a journal step cannot be saved")
        super().save(*args, **kwargs)


class RunEventKind(models.TextChoices):
    WORKER_LOST = "worker_lost"  # the lease expired with the run unfinished
    RESUMED = "resumed"  # another worker took it up from its journal
    REQUEUED = "requeued"  # beat sent it to the queue again
    IN_DOUBT = "in_doubt"  # a non-idempotent tool call with an intent and no result
    RECONCILED = "reconciled"  # a member said how the call in doubt ended
    DIVERGED = "diverged"  # a replay asked what its source did not


class RunEvent(TenantModel):
    run = models.ForeignKey("execution.Run", on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=RunEventKind.choices)
    detail = models.JSONField(default=dict)
    at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["run", "at"], name="run_event_run_at")]


class RunLinkKind(models.TextChoices):
    REPLAY = "replay"  # every call answered from the source's journal
    FORK = "fork"  # the source's journal before `fork_step`, that step overridden, then live


class RunLink(TenantModel):
    """A run made from another: which one, how, and where a replay left its source."""

    run = models.OneToOneField("execution.Run", on_delete=models.CASCADE, related_name="link")
    source = models.ForeignKey("execution.Run", on_delete=models.CASCADE, related_name="derived")
    kind = models.CharField(max_length=8, choices=RunLinkKind.choices)
    fork_step = models.PositiveIntegerField(null=True, blank=True)
    # A fork's override of step `fork_step`: {"result": ...} or {"request": {...}}.
    override = models.JSONField(null=True, blank=True)
    # A replay that diverged: the step, the recorded request, the new one and their diff.
    divergence = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)


class PlaygroundRunStatus(models.TextChoices):
    OK = "ok"  # the model answered
    ERROR = "error"  # the upstream failed (its error is on the chat span)


class PlaygroundRun(TenantModel):
    """One call run from the playground: an edited copy of a recorded chat span's
    request, sent through the gateway's LLM path and recorded as a trace of its own.

    The row exists before that trace's spans are stored, so costing knows the call was
    held to the budgets already and does not charge it again as an external agent's."""

    trace_id = models.CharField(max_length=32, unique=True)  # the new trace, hex
    source_trace_id = models.CharField(max_length=32)
    source_span_id = models.CharField(max_length=16)
    model = models.CharField(max_length=255)
    status = models.CharField(max_length=8, choices=PlaygroundRunStatus.choices, default="ok")
    input_tokens = models.PositiveIntegerField(null=True)
    output_tokens = models.PositiveIntegerField(null=True)
    cost_nusd = models.BigIntegerField(null=True)  # null: failed, or a model with no price
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "controlplane.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [
            models.Index(
                fields=["tenant", "source_trace_id", "source_span_id"], name="playground_source"
            )
        ]
