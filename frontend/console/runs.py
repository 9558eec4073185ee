"""Runs: the list of a tenant's managed runs."""

from django.urls import path
from django.views.decorators.http import require_GET

from frontend.decorators import tenant_view
from frontend.render import render_page


@require_GET
@tenant_view
def run_list(request, tenant_slug):
    return render_page(request, "frontend/console/coming.html", {"title": "Runs"})


urlpatterns = [path("", run_list, name="run-list")]
