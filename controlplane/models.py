from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel


class Tenant(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    is_active = models.BooleanField(default=True)
    # Spans a second this tenant may send; null uses INGEST_SPANS_PER_SECOND.
    ingest_spans_per_second = models.PositiveIntegerField(null=True, blank=True)
    # Counts retention's removals of payload rows, raised before each: ingest trusts its
    # process's memory of stored payloads only while the count is the one it saw then
    # (tracing/ingest/payloads.py), so a payload removed and sent again is stored again.
    payload_sweeps = models.PositiveBigIntegerField(default=0)

    def __str__(self):
        return self.slug


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Scope(models.TextChoices):
    INGEST = "ingest"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


# What each role may do when a person (not an API key) calls the API or uses the UI.
ROLE_SCOPES = {
    Role.OWNER: {Scope.INGEST, Scope.READ, Scope.WRITE, Scope.ADMIN},
    Role.ADMIN: {Scope.INGEST, Scope.READ, Scope.WRITE, Scope.ADMIN},
    Role.MEMBER: {Scope.INGEST, Scope.READ, Scope.WRITE},
    Role.VIEWER: {Scope.READ},
}


class Membership(TenantModel):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_one_per_user")
        ]

    def __str__(self):
        return f"{self.user} in {self.tenant} as {self.role}"

    @property
    def scopes(self) -> set[str]:
        return {str(s) for s in ROLE_SCOPES[Role(self.role)]}


class ApiKey(TenantModel):
    name = models.CharField(max_length=100)
    # The first characters of the key, shown in lists so a key can be recognised.
    prefix = models.CharField(max_length=16, db_index=True)
    # SHA-256 of the whole key: keys are 256-bit random, so a fast hash is enough and
    # lookup by hash keeps authentication to one indexed read.
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(TenantModel):
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_recent")]

    def __str__(self):
        return f"{self.action} {self.target_type}:{self.target_id}"

    @property
    def actor(self) -> str:
        """Who did it: a user's name, "api-key:<prefix>" or "system"."""
        if self.actor_api_key_id:
            return f"api-key:{self.actor_api_key.prefix}"
        if self.actor_user_id:
            return self.actor_user.get_username()
        return "system"


class RateBucket(models.Model):
    """Token buckets of controlplane.ratelimit where there is no Redis (embedded default)."""

    key = models.CharField(max_length=300, unique=True)
    tokens = models.FloatField()
    updated = models.FloatField()  # unix time of the last refill

    def __str__(self):
        return self.key


class PeriodicClaim(models.Model):
    """When each beat job last ran: a delivery claims the job's period before it runs
    (services.periodic_job_claim), so a second beat started by mistake doubles nothing."""

    name = models.CharField(max_length=200, primary_key=True)  # the task's name
    claimed_at = models.DateTimeField()
    runs = models.PositiveBigIntegerField(default=0)
    skipped = models.PositiveBigIntegerField(default=0)  # deliveries inside a claimed period

    def __str__(self):
        return self.name
