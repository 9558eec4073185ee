"""Alerts: the tenant's incidents, filtered by state, detector and agent, each linked
to the span that raised it; members acknowledge and resolve them (alerts.services,
audited, with who and when shown on the row)."""

from django.contrib import messages
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from alerts import selectors, services
from alerts.models import AlertState, Detector
from controlplane.services import Actor, ServiceError
from frontend import roles
from frontend.decorators import found_or_404, is_partial, tenant_view
from frontend.render import render_page

FILTERS = ("state", "detector", "agent", "trace", "run")


@require_GET
@tenant_view
def alert_list(request, tenant_slug):
    filters = {name: request.GET[name] for name in FILTERS if request.GET.get(name)}
    error, rows = "", []
    try:
        rows = selectors.alert_list(filters=filters)
    except ServiceError as exc:
        error = str(exc)
    context = {"alerts": rows, "error": error, "filtering": bool(filters)}
    status = 400 if error else 200
    if is_partial(request):
        return render_page(request, "frontend/console/_alert_rows.html", context, status=status)
    context.update(
        {
            "states": AlertState.values,
            "detectors": Detector.values,
            "agents": selectors.alert_agents(),
        }
    )
    return render_page(request, "frontend/console/alerts.html", context, status=status)


def _change(request, alert_id: int, service):
    alert = found_or_404(selectors.alert_get(alert_id=alert_id), "alert")
    try:
        service(alert=alert, actor=Actor(user=request.user))
    except ServiceError as exc:
        messages.error(request, f"Alert {alert.pk}: {exc}")
    # Back to the list as it was filtered (the form posts the query it came from).
    query = request.POST.get("query", "")
    return redirect(
        reverse("alert-list", args=[request.tenant.slug]) + (f"?{query}" if query else "")
    )


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def alert_acknowledge(request, tenant_slug, alert_id: int):
    return _change(request, alert_id, services.alert_acknowledge)


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def alert_resolve(request, tenant_slug, alert_id: int):
    return _change(request, alert_id, services.alert_resolve)


urlpatterns = [
    path("", alert_list, name="alert-list"),
    path("<int:alert_id>/acknowledge", alert_acknowledge, name="alert-acknowledge-ui"),
    path("<int:alert_id>/resolve", alert_resolve, name="alert-resolve-ui"),
]
