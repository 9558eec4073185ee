"""Tenancy operations: the only code that writes tenants, members, keys and audit rows."""

import copy
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.models import (
    ApiKey,
    AuditEvent,
    Membership,
    PeriodicClaim,
    Role,
    Scope,
    Tenant,
)

KEY_PREFIX = "fd_"


class ServiceError(ValueError):
    """A request the caller can fix; the message says what was wrong."""


@dataclass(frozen=True)
class Actor:
    """Who is doing something, for the audit log."""

    user: object | None = None
    api_key: ApiKey | None = None

    @classmethod
    def system(cls) -> "Actor":
        return cls()


def audit_record(
    *, tenant: Tenant, actor: Actor, action: str, target, data: dict | None = None
) -> AuditEvent:
    return AuditEvent.all_tenants.create(
        tenant=tenant,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=str(target.pk),
        data=data or {},
    )


@transaction.atomic
def tenant_create(*, slug: str, name: str = "", actor: Actor | None = None) -> Tenant:
    if Tenant.objects.filter(slug=slug).exists():
        raise ServiceError(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant.objects.create(slug=slug, name=name or slug)
    audit_record(
        tenant=tenant, actor=actor or Actor.system(), action="tenant.create", target=tenant
    )
    return tenant


def membership_change_problem(
    *,
    tenant: Tenant,
    actor: Actor,
    membership: Membership | None,
    role: str | None,
    lock: bool = False,
) -> str | None:
    """Why this change of a membership may not happen, or None. A tenant always keeps an
    owner, and only an owner makes or unmakes one.

    `role` is the new role, None when the membership is removed. Platform staff and the
    system (no membership, or staff) may do either, as long as an owner remains. `lock`
    (inside a transaction) holds the owners' rows until it ends, so that two owners
    demoting each other at once cannot both succeed."""
    was_owner = membership is not None and membership.role == Role.OWNER
    if not was_owner and role != Role.OWNER:
        return None
    if actor.user is not None and not actor.user.is_staff:
        acting = Membership.all_tenants.filter(tenant=tenant, user=actor.user).first()
        if acting is not None and acting.role != Role.OWNER:
            return "only an owner can make someone an owner or change an owner"
    if was_owner and role != Role.OWNER:
        owners = Membership.all_tenants.filter(tenant=tenant, role=Role.OWNER)
        if lock:
            owners = owners.select_for_update()
        if len(owners) <= 1:
            return "a tenant always keeps an owner: make someone else owner first"
    return None


def _owner_guard(**change) -> None:
    problem = membership_change_problem(**change, lock=True)
    if problem:
        raise ServiceError(problem)


@transaction.atomic
def membership_add(*, tenant: Tenant, user, role: str, actor: Actor | None = None) -> Membership:
    """Add a member, or set the role of one."""
    actor = actor or Actor.system()
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r} (use one of {', '.join(Role.values)})")
    existing = Membership.all_tenants.filter(tenant=tenant, user=user).first()
    _owner_guard(tenant=tenant, actor=actor, membership=existing, role=role)
    membership, _ = Membership.all_tenants.update_or_create(
        tenant=tenant, user=user, defaults={"role": role}
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="membership.set",
        target=membership,
        data={"user": user.get_username(), "role": role},
    )
    return membership


@transaction.atomic
def member_add_by_email(
    *, tenant: Tenant, email: str, role: str, actor: Actor
) -> tuple[Membership, str | None]:
    """Add the person with this e-mail (a new user if there is none); the new user's
    generated password is returned once."""
    if role not in Role.values:
        raise ServiceError(f"unknown role {role!r} (use one of {', '.join(Role.values)})")
    User = get_user_model()
    user = User.objects.filter(username=email).first()
    if user and Membership.all_tenants.filter(tenant=tenant, user=user).exists():
        raise ServiceError(f"{email} is already a member: change their role in the list")
    user, password = user_get_or_create(email=email)
    return membership_add(tenant=tenant, user=user, role=role, actor=actor), password


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    _owner_guard(tenant=membership.tenant, actor=actor, membership=membership, role=None)
    audit_record(
        tenant=membership.tenant,
        actor=actor,
        action="membership.remove",
        target=membership,
        data={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


def user_get_or_create(*, email: str) -> tuple[object, str | None]:
    """The user with this e-mail; a new one gets a generated password, returned once."""
    User = get_user_model()
    user = User.objects.filter(username=email).first()
    if user:
        return user, None
    password = secrets.token_urlsafe(12)
    user = User.objects.create_user(username=email, email=email, password=password)
    return user, password


def staff_user_create(*, email: str) -> tuple[object, str | None]:
    """Platform staff: Django's admin across tenants. A new user's password is returned once."""
    user, password = user_get_or_create(email=email)
    if not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    return user, password


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *, tenant: Tenant, name: str, scopes: list[str], actor: Actor | None = None
) -> tuple[ApiKey, str]:
    """Create a key; the raw key is returned here once and never stored."""
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ServiceError(f"unknown scopes {unknown} (use {', '.join(Scope.values)})")
    if not scopes:
        raise ServiceError("an API key needs at least one scope")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.all_tenants.create(
        tenant=tenant,
        name=name,
        prefix=raw[:10],
        key_hash=api_key_hash(raw),
        scopes=sorted(set(scopes)),
        created_by=(actor.user if actor else None),
    )
    audit_record(
        tenant=tenant,
        actor=actor or Actor.system(),
        action="api_key.create",
        target=key,
        data={"name": name, "scopes": key.scopes, "prefix": key.prefix},
    )
    return key, raw


@transaction.atomic
def api_key_rename(*, key: ApiKey, name: str, actor: Actor) -> ApiKey:
    old = ApiKey.all_tenants.values_list("name", flat=True).get(pk=key.pk)
    key.name = name
    if old != name:
        key.save(update_fields=["name"])
        audit_record(
            tenant=key.tenant,
            actor=actor,
            action="api_key.rename",
            target=key,
            data={"from": old, "to": name},
        )
    return key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor | None = None) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            tenant=key.tenant, actor=actor or Actor.system(), action="api_key.revoke", target=key
        )
        # This process refuses the key at once; a request that read the row before this
        # commit may cache it again meanwhile, hence once more after the commit. Other
        # processes refuse it once their entry expires (API_KEY_CACHE_SECONDS).
        _active_keys.forget(key.key_hash)
        transaction.on_commit(lambda: _active_keys.forget(key.key_hash))
    return key


class _ActiveKeys:
    """The keys this process authenticated in the last API_KEY_CACHE_SECONDS, by hash:
    every ingest request names its key, and reading it from the database each time was
    a round trip and a statement per request. A revoked key (or its tenant deactivated)
    is refused by other processes once their entry expires. Unknown keys are never
    remembered: they are the throttle's business."""

    SIZE = 1024

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> ApiKey | None:
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key_hash]
                return None
            self._entries.move_to_end(key_hash)
            return entry[1]

    def put(self, key_hash: str, key: ApiKey) -> None:
        seconds = settings.API_KEY_CACHE_SECONDS
        if seconds <= 0:
            return
        with self._lock:
            self._entries[key_hash] = (self.clock() + seconds, key)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self.SIZE:
                self._entries.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._entries.pop(key_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_active_keys = _ActiveKeys()


def api_key_cache_clear() -> None:
    """Forget every key this process authenticated (tests: a database rolled back)."""
    _active_keys.clear()


def api_key_authenticate(*, raw_key: str, before_read=None) -> ApiKey | None:
    """The active key for this raw key, or None. Records use at most once a minute.
    `before_read()` runs before the key is looked for in the database (the failed-attempt
    throttle, which may raise): a key this process accepted within API_KEY_CACHE_SECONDS
    was not guessed, and a successful request then costs no throttle round trips."""
    key_hash = api_key_hash(raw_key)
    cached = _active_keys.get(key_hash)
    if cached is None:
        if before_read is not None:
            before_read()
        if not raw_key.startswith(KEY_PREFIX):
            return None
        # Authentication happens before any tenant is known: this read spans tenants.
        cached = (
            ApiKey.objects.unscoped()
            .select_related("tenant")
            .filter(key_hash=key_hash, revoked_at__isnull=True, tenant__is_active=True)
            .first()
        )
        if cached is None:
            return None
        _active_keys.put(key_hash, cached)
    # Each request gets its own key and tenant objects: a view may change them.
    key = copy.copy(cached)
    key.tenant = copy.copy(cached.tenant)
    now = timezone.now()
    stale = now - timedelta(seconds=settings.API_KEY_TOUCH_SECONDS)
    if key.last_used_at is None or key.last_used_at < stale:
        # Conditional so that concurrent requests write once, and ingest's hot path
        # does not write on every request.
        ApiKey.objects.unscoped().filter(pk=key.pk).exclude(last_used_at__gte=stale).update(
            last_used_at=now
        )
        key.last_used_at = cached.last_used_at = now
    return key


# A beat job runs at most once in this share of its period: one beat's own jitter stays
# inside it, and a second beat's deliveries, whatever their phase, fall inside a claim.
CLAIM_SHARE = 0.8


def _beat_period(name: str) -> float | None:
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        if entry["task"] == name:
            schedule = entry["schedule"]
            if isinstance(schedule, timedelta):
                return schedule.total_seconds()
            return float(schedule) if isinstance(schedule, int | float) else None
    return None


def periodic_job_claim(*, name: str) -> bool:
    """Claim this period of the beat job `name`: True for the delivery that should run it,
    False for another delivery in the same period (two beats). A conditional UPDATE, so
    it holds across processes on PostgreSQL and SQLite alike. A job beat does not
    schedule by a fixed period (or not at all) is not claimed."""
    period = _beat_period(name)
    if period is None:
        return True
    now = timezone.now()
    PeriodicClaim.objects.get_or_create(
        name=name, defaults={"claimed_at": now - timedelta(seconds=period)}
    )
    due = now - timedelta(seconds=period * CLAIM_SHARE)
    claimed = PeriodicClaim.objects.filter(name=name, claimed_at__lte=due)
    if claimed.update(claimed_at=now, runs=F("runs") + 1) == 1:
        return True
    PeriodicClaim.objects.filter(name=name).update(skipped=F("skipped") + 1)
    return False
