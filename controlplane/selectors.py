"""Tenancy reads."""

from controlplane.models import Membership, Role, Tenant


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
