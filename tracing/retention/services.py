"""Retention's writes that people ask for: the policy, legal holds, marks, erasure
requests. The tier moves themselves are in `tiers.py`, run by `job.py`."""

import uuid

from django.db import transaction
from django.utils import timezone

from controlplane.models import Tenant
from controlplane.services import Actor, ServiceError, audit_record
from tracing.retention.models import (
    TIER_KEYS,
    ErasureRequest,
    LegalHold,
    RetentionPolicy,
    TraceMark,
)
from tracing.retention.policy import agents_checked, days_checked


def _who(actor: Actor) -> str:
    if actor.user is not None:
        return actor.user.get_username()
    if actor.api_key is not None:
        return f"key {actor.api_key.prefix}"
    return "system"


@transaction.atomic
def retention_policy_update(
    *,
    tenant: Tenant,
    actor: Actor,
    hot_days: int,
    warm_days: int,
    cold_days: int,
    extended_days: int,
    agents: dict,
) -> RetentionPolicy:
    days = {
        key: days_checked(value, key)
        for key, value in zip(
            TIER_KEYS, (hot_days, warm_days, cold_days, extended_days), strict=True
        )
    }
    agents = agents_checked(agents)
    policy, _ = RetentionPolicy.objects.select_for_update().get_or_create(tenant=tenant)
    before = {key: getattr(policy, key) for key in TIER_KEYS} | {"agents": policy.agents}
    for key, value in days.items():
        setattr(policy, key, value)
    policy.agents = agents
    policy.updated_at = timezone.now()
    policy.save()
    audit_record(
        tenant=tenant,
        actor=actor,
        action="retention.update",
        target=policy,
        data={"before": before, "after": {**days, "agents": agents}},
    )
    return policy


def _hold_value(scope: str, value: str) -> str:
    if scope == LegalHold.Scope.TENANT:
        if value:
            raise ServiceError("value must be empty for a hold on the whole tenant")
        return ""
    if not value:
        raise ServiceError(f"value must name the {scope} to hold")
    if scope == LegalHold.Scope.TRACE:
        try:
            return uuid.UUID(hex=value).hex
        except ValueError:
            raise ServiceError("value must be a trace id of 32 hex characters") from None
    if len(value) > 255:
        raise ServiceError("value is at most 255 characters")
    return value


@transaction.atomic
def legal_hold_create(
    *, tenant: Tenant, actor: Actor, scope: str, value: str = "", reason: str = ""
) -> LegalHold:
    if scope not in LegalHold.Scope.values:
        raise ServiceError(f"scope must be one of {', '.join(LegalHold.Scope.values)}")
    hold = LegalHold.objects.create(
        tenant=tenant,
        scope=scope,
        value=_hold_value(scope, value),
        reason=reason[:500],
        created_by=_who(actor),
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="legal_hold.create",
        target=hold,
        data={"scope": hold.scope, "value": hold.value},
    )
    return hold


@transaction.atomic
def legal_hold_delete(*, tenant: Tenant, actor: Actor, hold: LegalHold) -> None:
    audit_record(
        tenant=tenant,
        actor=actor,
        action="legal_hold.delete",
        target=hold,
        data={"scope": hold.scope, "value": hold.value},
    )
    hold.delete()


@transaction.atomic
def trace_mark_set(*, tenant: Tenant, actor: Actor, trace_hex: str) -> TraceMark:
    """Keep a trace at least the policy's extended_days. Marking a marked trace again
    changes nothing (and is not audited twice)."""
    mark, created = TraceMark.objects.get_or_create(
        tenant=tenant, trace_hex=uuid.UUID(hex=trace_hex).hex, defaults={"created_by": _who(actor)}
    )
    if created:
        audit_record(
            tenant=tenant,
            actor=actor,
            action="trace.mark",
            target=mark,
            data={"trace_id": mark.trace_hex},
        )
    return mark


@transaction.atomic
def trace_mark_clear(*, tenant: Tenant, actor: Actor, trace_hex: str) -> bool:
    """The trace goes back to the policy's days. False if it was not marked."""
    mark = TraceMark.objects.filter(trace_hex=uuid.UUID(hex=trace_hex).hex).first()
    if mark is None:
        return False
    audit_record(
        tenant=tenant,
        actor=actor,
        action="trace.unmark",
        target=mark,
        data={"trace_id": mark.trace_hex},
    )
    mark.delete()
    return True


@transaction.atomic
def erasure_request_create(
    *, tenant: Tenant, actor: Actor, session_id: str = "", user_id: str = ""
) -> ErasureRequest:
    if bool(session_id) == bool(user_id):
        raise ServiceError("session_id or user_id: give exactly one")
    for name, value in (("session_id", session_id), ("user_id", user_id)):
        if len(value) > 255:
            raise ServiceError(f"{name} is at most 255 characters")
    request = ErasureRequest.objects.create(
        tenant=tenant, session_id=session_id, user_id=user_id, requested_by=_who(actor)
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="erasure.request",
        target=request,
        data={"session_id": session_id} if session_id else {"user_id": user_id},
    )
    from tracing.retention import tasks

    tasks.erasure_run.delay_on_commit(tenant_id=tenant.pk, request_id=request.pk)
    return request
