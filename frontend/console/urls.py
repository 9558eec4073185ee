from django.shortcuts import redirect
from django.urls import include, path
from django.views.decorators.http import require_GET

from frontend.console import agents, alerts, codingagents, costs, replays, runs
from frontend.decorators import tenant_view


@require_GET
@tenant_view
def console_home(request, tenant_slug):
    """The console's own address, /t/<slug>/: it opens on the tenant's traces."""
    return redirect("trace-list", tenant_slug=tenant_slug)


urlpatterns = [
    path("", console_home, name="console"),
    path("runs/", include(runs)),
    path("runs/", include(replays)),
    path("agents/", include(agents)),
    path("costs/", include(costs)),
    path("coding-agents/", include(codingagents)),
    path("alerts/", include(alerts)),
    path("settings/", include("frontend.console.settings.urls")),
]
