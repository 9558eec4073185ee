"""Agents: a tenant's agents and their versions."""

from django.urls import path
from django.views.decorators.http import require_GET

from frontend.decorators import tenant_view
from frontend.render import render_page


@require_GET
@tenant_view
def agent_list(request, tenant_slug):
    return render_page(request, "frontend/console/coming.html", {"title": "Agents"})


urlpatterns = [path("", agent_list, name="agent-list")]
