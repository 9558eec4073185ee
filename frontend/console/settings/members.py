"""Settings › Members: who belongs to the tenant, with which role."""

from django.urls import path
from django.views.decorators.http import require_GET

from controlplane import selectors
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


@require_GET
@tenant_view
def member_list(request, tenant_slug):
    context = {"members": selectors.membership_list(tenant=request.tenant)}
    return render_settings(request, "frontend/console/settings/members.html", context)


urlpatterns = [path("", member_list, name="settings-members")]
