"""Alerts' data: rules (what to detect, where to deliver, whether to stop the run),
incidents (one per cause), delivery endpoints and their log, and the small per-trace
and per-window state that makes detection incremental."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.tenancy import TenantModel


class Detector(models.TextChoices):
    LOOP = "loop"
    HALLUCINATED_TOOL = "hallucinated_tool"
    BUDGET = "budget"
    ERROR_BURST = "error_burst"
    STUCK_RUN = "stuck_run"
    COST_SPIKE = "cost_spike"


class EndpointFormat(models.TextChoices):
    STANDARD = "standard"  # Standard Webhooks, signed
    SLACK = "slack"  # a Slack incoming-webhook body, signed too


class WebhookEndpoint(TenantModel):
    """Where alerts go: an http(s) URL, or `mailto:address` for e-mail."""

    url = models.CharField(max_length=2000)
    format = models.CharField(
        max_length=16, choices=EndpointFormat.choices, default=EndpointFormat.STANDARD
    )
    secret = models.CharField(max_length=64)  # whsec_ + base64; shown once, at creation
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.url


class AlertRule(TenantModel):
    detector = models.CharField(max_length=32, choices=Detector.choices)
    agent = models.CharField(max_length=255, blank=True, default="")  # blank: every agent
    threshold = models.FloatField(null=True, blank=True)  # null: the detector's default
    endpoints = models.ManyToManyField(WebhookEndpoint, blank=True, related_name="rules")
    stop_run = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "detector"], name="alertrule_detector")]

    def __str__(self):
        return f"{self.detector} {self.agent or '*'}"


class AlertState(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(TenantModel):
    """One incident per cause: `cause` names it (e.g. loop:<trace>:<call>), and only one
    alert per cause is unresolved at a time, so a cause seen again adds nothing."""

    rule = models.ForeignKey(AlertRule, on_delete=models.SET_NULL, null=True, related_name="+")
    detector = models.CharField(max_length=32, choices=Detector.choices)
    cause = models.CharField(max_length=255)
    agent = models.CharField(max_length=255, blank=True, default="")
    trace_id = models.CharField(max_length=32, blank=True, default="")
    span_id = models.CharField(max_length=16, blank=True, default="")
    run_id = models.CharField(max_length=64, blank=True, default="")
    summary = models.CharField(max_length=500)
    detail = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=AlertState.choices, default=AlertState.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "rule", "cause"],
                condition=~Q(state="resolved"),
                name="alert_one_open_per_cause",
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="alert_recent"),
            models.Index(fields=["tenant", "trace_id"], name="alert_trace"),
            models.Index(fields=["tenant", "run_id"], name="alert_run"),
        ]

    def __str__(self):
        return f"{self.detector}: {self.summary}"


class Delivery(TenantModel):
    """One attempt to deliver one alert to one endpoint. `message_id` is the
    webhook-id, the same on every attempt, so a receiver can drop a repeat."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, null=True, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=64)
    attempt = models.PositiveSmallIntegerField(default=1)
    ok = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True)
    error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "message_id"], name="delivery_message")]


class TraceWatch(TenantModel):
    """What detection keeps of one trace between batches: call counts by key, the last
        calls in order, and the digests of the batches already seen (a redelivered task
        counts nothing twice). Bounded in size (see alerts/detectors.py), and deleted once the
    trace has been idle for ALERTS_WATCH_IDLE_HOURS (alerts.prune_state)."""

    trace_id = models.CharField(max_length=32)
    state = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "trace_id"], name="tracewatch_unique")
        ]
        indexes = [models.Index(fields=["updated_at"], name="tracewatch_idle")]  # the prune


class ErrorWindow(TenantModel):
    """Calls and errors of one agent or tool in one minute, for the error-burst window;
    minutes older than ALERTS_ERROR_KEEP_MINUTES are deleted (alerts.prune_state)."""

    subject = models.CharField(max_length=300)  # agent:<name> or tool:<name>
    minute = models.BigIntegerField()  # unix minutes
    calls = models.IntegerField(default=0)
    errors = models.IntegerField(default=0)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "subject", "minute"], name="errorwindow_unique"
            )
        ]
        indexes = [models.Index(fields=["minute"], name="errorwindow_minute")]  # the prune
