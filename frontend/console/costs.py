"""Costs: spend over time by agent and by model (charts), the costliest traces and runs,
and the budgets' bars. Reads billing's selectors only."""

import json
from datetime import timedelta

from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing import selectors
from frontend.console.settings.budgets import budget_rows
from frontend.decorators import tenant_view
from frontend.render import render_page

DAYS = 30


@require_GET
@tenant_view
def cost_overview(request, tenant_slug):
    until = timezone.now().date()
    since = until - timedelta(days=DAYS - 1)
    context = {
        "since": since,
        "until": until,
        # Read by static/frontend/costs.js from the canvases' data-series.
        "by_agent_json": json.dumps(selectors.cost_series(since=since, until=until, by="agent")),
        "by_model_json": json.dumps(selectors.cost_series(since=since, until=until, by="model")),
        "totals": selectors.usage(since=since, until=until, group_by=["kind"]),
        "unknown": selectors.unknown_models(since=since, until=until),
        "top_traces": selectors.top_costs(dimension="trace"),
        "top_runs": selectors.top_costs(dimension="run"),
        "budgets": budget_rows(),
    }
    return render_page(request, "frontend/console/costs.html", context)


urlpatterns = [path("", cost_overview, name="costs")]
