"""Coding agents (Claude Code, Codex CLI): tokens and cost over time by model and user
from their metrics, each user's sessions, lines of code, commits, pull requests and
tool acceptance, the price book's cost of their calls, and their sessions linked to
the session and trace views. The period is a query parameter; htmx swaps the body."""

import json
from datetime import timedelta

from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from billing import selectors as billing
from frontend.decorators import is_partial, tenant_view
from frontend.render import render_page
from tracing.codingagents import selectors

PERIODS = (7, 30, 90)


@require_GET
@tenant_view
def coding_agents(request, tenant_slug):
    days = request.GET.get("days", "30")
    days = int(days) if days.isdigit() and int(days) in PERIODS else 30
    until = timezone.now().date()
    since = until - timedelta(days=days - 1)
    overview = selectors.coding_overview(since=since, until=until)
    sessions = selectors.coding_sessions(since=since, until=until)
    costs = billing.totals("session", [s["session_id"] for s in sessions])
    for s in sessions:
        s["cost"] = costs.get(s["session_id"])
    priced = [
        u
        for u in billing.usage(since=since, until=until, group_by=["agent"])
        if u["agent"] in selectors.AGENT_NAMES
    ]
    context = {
        "days": days,
        "periods": PERIODS,
        "overview": overview,
        "sessions": sessions,
        "priced": priced,
        # Read by static/frontend/costs.js from the canvases' data-series.
        "tokens_json": json.dumps(overview.tokens_by_model),
        "cost_json": json.dumps(overview.cost_by_user),
    }
    if is_partial(request):
        response = render(request, "frontend/console/_coding_agents_body.html", {
            **context, "tenant": request.tenant})  # fmt: skip
        patch_vary_headers(response, ["HX-Request"])
        return response
    return render_page(request, "frontend/console/coding_agents.html", context)


urlpatterns = [path("", coding_agents, name="coding-agents")]
