"""What replay adds to a run: its link to the run it replays or forks, and the events
of its life that are not calls (a worker lost, the run taken up again, a call in doubt
resolved, a divergence)."""

from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel


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
