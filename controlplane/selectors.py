"""Tenancy reads. Those without a `tenant` argument run under the caller's tenant scope
(the managers fail closed without one); a `_get` returns None when the tenant has no such
row, so the caller answers 404."""

from django.db.models import QuerySet

from controlplane.models import ApiKey, AuditEvent, Membership, Role, Tenant


def tenants_for_user(*, user) -> list[Membership]:
    """Every membership of a user, across tenants (a person may belong to several)."""
    if not user or not user.is_authenticated:
        return []
    return list(
        Membership.objects.unscoped()
        .select_related("tenant")
        .filter(user=user, tenant__is_active=True)
        .order_by("tenant__slug")
    )


def membership_for(*, user, tenant: Tenant) -> Membership | None:
    if not user or not user.is_authenticated:
        return None
    return (
        Membership.objects.unscoped()
        .filter(user=user, tenant=tenant, tenant__is_active=True)
        .first()
    )


def membership_list(*, tenant: Tenant) -> list[Membership]:
    """A tenant's members, owners first, then by e-mail."""
    order = {role: i for i, role in enumerate(Role.values)}
    rows = Membership.objects.select_related("user").filter(tenant=tenant)
    return sorted(rows, key=lambda m: (order[m.role], m.user.get_username()))


def membership_get(*, membership_id: int) -> Membership | None:
    return Membership.objects.select_related("user", "tenant").filter(pk=membership_id).first()


def api_key_list() -> QuerySet[ApiKey]:
    """The tenant's API keys, newest first."""
    return ApiKey.objects.select_related("created_by").order_by("-created_at", "-id")


def api_key_get(*, key_id: int) -> ApiKey | None:
    return ApiKey.objects.select_related("tenant").filter(pk=key_id).first()


def audit_event_list(
    *, actor: str = "", action: str = "", target_type: str = "", target_id: str = ""
) -> QuerySet[AuditEvent]:
    """The audit log, newest first. `actor` is "system", "api-key:<prefix>" or part of a
    user's name; `action` and the target are matched exactly."""
    events = AuditEvent.objects.select_related("actor_user", "actor_api_key")
    if actor == "system":
        events = events.filter(actor_user__isnull=True, actor_api_key__isnull=True)
    elif actor.startswith("api-key:"):
        events = events.filter(actor_api_key__prefix__startswith=actor.removeprefix("api-key:"))
    elif actor:
        events = events.filter(actor_user__username__icontains=actor)
    if action:
        events = events.filter(action=action)
    if target_type:
        events = events.filter(target_type=target_type)
    if target_id:
        events = events.filter(target_id=target_id)
    return events.order_by("-created_at", "-id")


def audit_actions() -> list[str]:
    """The actions the tenant's log holds, for the filter's choices."""
    return list(AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct())
