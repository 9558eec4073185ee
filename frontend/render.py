"""Rendering a tenant page with what every page's frame needs."""

from django.shortcuts import render
from django.utils.cache import patch_vary_headers

from controlplane.selectors import tenants_for_user
from frontend import roles


def section(request) -> str:
    """The top-level section a tenant page belongs to: the path's segment after the
    tenant ("traces", "runs", "settings", ...), which is what the top navigation marks."""
    parts = request.path.strip("/").split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "t" else ""


def render_page(request, template, context, status=200):
    """Render a page of request.tenant with the tenant switcher, the user and their role."""
    membership = request.membership
    context = {
        "nav": section(request),
        "tenant": request.tenant,
        "membership": membership,
        "memberships": tenants_for_user(user=request.user),
        "can_run": roles.allows(membership, roles.RUN),
        "can_admin": roles.allows(membership, roles.CHANGE_SETTINGS),
        **context,
    }
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response
