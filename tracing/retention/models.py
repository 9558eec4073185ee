"""Retention's rows: each tenant's policy, legal holds, erasure requests, storage
accounting and the record of what was removed. Imported by tracing/models.py, so they
belong to the tracing app and its migrations."""

from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel

TIER_KEYS = ("hot_days", "warm_days", "cold_days", "extended_days")
# The attributes naming a trace's end user, for erasure by user id.
USER_KEYS = ("user.id", "enduser.id")


class Tier(models.IntegerChoices):
    HOT = 0  # rows and payloads as ingested
    WARM = 1  # one zstd bundle in the blob store, standard storage class
    COLD = 2  # the bundle in a cheaper storage class
    DELETING = 3  # being removed: unreadable, finished by the next run


class RetentionPolicy(TenantModel):
    """A tenant's retention days. Null fields take the plan's defaults
    (settings.RETENTION_PLANS); `agents` overrides any of them per agent name."""

    tenant = models.OneToOneField("controlplane.Tenant", on_delete=models.CASCADE)
    plan = models.CharField(max_length=32, default="standard")
    hot_days = models.PositiveIntegerField(null=True)
    warm_days = models.PositiveIntegerField(null=True)
    cold_days = models.PositiveIntegerField(null=True)
    extended_days = models.PositiveIntegerField(null=True)
    agents = models.JSONField(default=dict, blank=True)  # {name: {hot_days: 3, ...}}
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        verbose_name_plural = "retention policies"

    def __str__(self):
        return f"retention of {self.tenant_id}"


class LegalHold(TenantModel):
    """Keeps a trace, a session or the whole tenant from deletion (tiers still move)."""

    class Scope(models.TextChoices):
        TRACE = "trace"
        SESSION = "session"
        TENANT = "tenant"

    scope = models.CharField(max_length=16, choices=Scope.choices)
    value = models.CharField(max_length=255, blank=True)  # trace id hex or session id
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "scope", "value"], name="legalhold_lookup")]

    def __str__(self):
        return f"hold on {self.scope} {self.value}"


class TraceMark(TenantModel):
    """A trace a user marked to keep: it stays for the policy's extended_days."""

    trace_hex = models.CharField(max_length=32)
    created_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "trace_hex"], name="tracemark_unique")
        ]

    def __str__(self):
        return self.trace_hex


class ErasureRequest(TenantModel):
    """Erase every trace of a session or of an end user (user.id / enduser.id)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    session_id = models.CharField(max_length=255, blank=True)
    user_id = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # What was removed, by count and trace id; never content.
    removed = models.JSONField(default=dict, blank=True)
    requested_by = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"erasure {self.pk} {self.status}"


class StorageUsage(TenantModel):
    """Bytes a tenant stores per tier, database and blob store apart; rewritten by
    each retention run for the tenant. `places` splits the tier's bytes by where they
    are priced (billing.models.STORAGE_PRICE_FIELDS: "database", then the blob store's
    S3 classes), since one tier's bundles may sit in more than one class. The hot
    tier's blob bytes include the tenant's agent bundles."""

    tier = models.SmallIntegerField(choices=Tier.choices)
    traces = models.BigIntegerField(default=0)
    db_bytes = models.BigIntegerField(default=0)
    blob_bytes = models.BigIntegerField(default=0)
    places = models.JSONField(default=dict)  # {"database": bytes, "GLACIER_IR": bytes}
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "tier"], name="storageusage_unique")
        ]

    def __str__(self):
        return f"{self.tenant_id} {self.get_tier_display()}"


class RemovalRecord(models.Model):
    """What a tenant deletion or an erasure removed: counts and ids, never content.
    Not a tenant row: it outlives the tenant it describes."""

    tenant_id_value = models.BigIntegerField()
    tenant_slug = models.CharField(max_length=63)
    action = models.CharField(max_length=32)  # tenant.delete, erasure, retention
    counts = models.JSONField(default=dict)
    trace_ids = models.JSONField(default=list)
    at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.action} {self.tenant_slug}"
