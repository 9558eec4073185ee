"""Runs: the tenant's managed runs, one run's facts and journal, starting and cancelling.

Reads go through execution's selectors, writes through its services with the person as
the actor, exactly as the API does. Pages of runs that are still queued or running poll
the same URL for their fragment (htmx) until the run has finished.
"""

import json

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from alerts import selectors as alerts_selectors
from billing import selectors as billing_selectors
from controlplane.services import Actor, ServiceError
from execution import selectors, services
from execution.api import JournalStepSerializer
from execution.models import RunStatus
from frontend import roles
from frontend.console import run_present
from frontend.console.forms import RunStartForm
from frontend.decorators import found_or_404, is_partial, tenant_view
from frontend.render import render_page
from replay import selectors as replay_selectors
from tracing.query.filters import FilterError, parse_whole

PAGE = 50
# Steps sent at once: a run may take 10,000, each with its request and result.
STEP_CHUNK = 500
# How often a page with a queued or running run asks for its fragment again.
POLL = "every 1s"


def _rows(runs) -> list[dict]:
    runs = list(runs)
    alerts = alerts_selectors.alerted_runs(run_ids=[run.pk for run in runs])  # one query
    costs = billing_selectors.run_costs([run.pk for run in runs])  # one query for the page
    return [
        {
            "run": run,
            "active": run_present.is_active(run),
            "duration_ms": run_present.run_duration_ms(run),
            "alerts": alerts.get(str(run.pk), 0),
            "cost_usd": costs[run.pk],
        }
        for run in runs
    ]


@require_GET
@tenant_view
def run_list(request, tenant_slug):
    status, agent = request.GET.get("status", ""), request.GET.get("agent", "")
    error, page = "", None
    if status and status not in RunStatus.values:
        error = f"status must be one of {', '.join(RunStatus.values)}"
    else:
        runs = selectors.run_list(status=status or None, agent=agent or None)
        page = Paginator(runs, PAGE).get_page(request.GET.get("page"))
    rows = _rows(page or [])
    context = {
        "rows": rows,
        "page": page,
        "error": error,
        "live": any(r["active"] for r in rows),
        "poll": POLL,
        "filtering": bool(status or agent),
    }
    http_status = 400 if error else 200
    if is_partial(request):
        return render_page(request, "frontend/console/_run_rows.html", context, status=http_status)
    context.update(
        {
            "statuses": RunStatus.values,
            "agents": [a.name for a in selectors.agent_list()],
        }
    )
    return render_page(request, "frontend/console/runs.html", context, status=http_status)


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _live_context(run) -> dict:
    return {
        "run": run,
        "active": run_present.is_active(run),
        "duration_ms": run_present.run_duration_ms(run),
        "usage": run_present.run_usage(run),
        "cost_usd": billing_selectors.run_costs([run.pk])[run.pk],
        "output_json": _json(run.output),
        "poll": POLL,
        "alerts": alerts_selectors.alerted_runs(run_ids=[run.pk]).get(str(run.pk), 0),
    }


def _steps_after(run, after: int) -> tuple[list, int | None]:
    """The next STEP_CHUNK steps after `after`, and the step to continue after when there
    are more (None when these are the last)."""
    found = list(selectors.run_steps(run=run, after=after)[: STEP_CHUNK + 1])
    readable = replay_selectors.steps_readable(found[:STEP_CHUNK], tenant_id=run.tenant_id)
    rows = run_present.step_rows(readable)
    return rows, (rows[-1].step if len(found) > STEP_CHUNK else None)


def _detail(request, run, *, notice: str = "", status: int = 200):
    from frontend.console.replays import panel_context

    context = {**_live_context(run), **panel_context(run)}
    steps, more = _steps_after(run, 0)
    context.update(
        {
            "steps": steps,
            "last_step": steps[-1].step if steps else 0,
            # While it runs, the page's polling brings the rest; afterwards, scrolling does.
            "more_after": None if context["active"] else more,
            "input_json": _json(run.input),
            "notice": notice,
        }
    )
    return render_page(request, "frontend/console/run.html", context, status=status)


def _step_context(run, number: int, *, unredacted: bool = False) -> dict:
    """One step, whole, as GET /api/v1/runs/{id}/steps has it (redacted unless an admin
    asked), with the conversation of an LLM call read back from its chat span."""
    step = found_or_404(selectors.run_step_get(run=run, step=number), "step")
    [step] = replay_selectors.steps_readable([step], tenant_id=run.tenant_id, unredacted=unredacted)
    data = JournalStepSerializer(step).data
    conversation = None
    if step.kind == "llm.messages" and isinstance(step.request, dict):
        conversation = replay_selectors.conversation_of(
            trace_id=run.trace_id, reference=step.request.get("messages")
        )
    return {
        "step": data,
        "request_json": _json(data["request"]),
        "result_json": _json(data["result"]),
        "conversation": conversation,
        "conversation_json": _json(conversation),
        "unredacted": unredacted,
        "run": run,  # "Fork from here" posts to this run
    }


def _step_number(params, name: str) -> int | None:
    raw = params.get(name, "")
    return parse_whole(raw, name, maximum=2**31 - 1) if raw else None


@require_GET
@tenant_view
def run_detail(request, tenant_slug, run_id: int):
    run = found_or_404(selectors.run_get(run_id=run_id), "run")
    if not is_partial(request):
        return _detail(request, run)
    try:
        step = _step_number(request.GET, "step")
        after = _step_number(request.GET, "after") or 0
    except FilterError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    if step is not None:
        unredacted = request.GET.get("unredacted") == "1"
        if unredacted and not roles.allows(request.membership, roles.CHANGE_SETTINGS):
            return HttpResponse(
                "unredacted steps are for admins", status=403, content_type="text/plain"
            )
        context = _step_context(run, step, unredacted=unredacted)
        return render_page(request, "frontend/console/_run_step.html", context)
    steps, more = _steps_after(run, after)
    if request.GET.get("more"):
        # The next steps of a finished run, asked for as the journal scrolls.
        context = {"run": run, "steps": steps, "more_after": more}
        return render_page(request, "frontend/console/_run_steps.html", context)
    # The live part, and the steps taken since the page's last one.
    context = _live_context(run)
    context.update(
        {
            "new_steps": steps,
            "last_step": steps[-1].step if steps else after,
            "more_after": None if context["active"] else more,
        }
    )
    return render_page(request, "frontend/console/_run_live.html", context)


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def run_cancel(request, tenant_slug, run_id: int):
    run = found_or_404(selectors.run_get(run_id=run_id), "run")
    try:
        services.run_cancel(run=run, actor=Actor(user=request.user))
    except ServiceError as exc:
        return _detail(request, run, notice=str(exc), status=409)
    return redirect("run-detail", tenant_slug, run.pk)


def _startable_agents() -> dict:
    """Agents that have a version to run, by name, with their versions newest first."""
    agents = {}
    for agent in selectors.agent_list():
        versions = sorted(agent.versions.all(), key=lambda v: v.version, reverse=True)
        if versions:
            agents[agent.name] = (agent, versions)
    return agents


def _start_context(request, form, agents, chosen) -> dict:
    agent, versions = agents.get(chosen, (None, []))
    wanted = form["version"].value()
    version = next((v for v in versions if str(v.version) == str(wanted)), None)
    version = version or (versions[0] if versions else None)
    # Each limit field shows the value the run gets when it is left empty.
    effective = services.run_limits(manifest=version.manifest, requested=None) if version else {}
    for key, value in effective.items():
        if key in form.fields:
            form.fields[key].widget.attrs["placeholder"] = value
    # Choosing another agent fetches its versions and limits (this view's fragment).
    form.fields["agent"].widget.attrs.update(
        {
            "hx-get": reverse("run-new", args=[request.tenant.slug]),
            "hx-trigger": "change",
            "hx-target": "#agent-fields",
            "hx-swap": "outerHTML",
        }
    )
    return {"form": form, "agent": agent, "version": version}


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.RUN)
def run_new(request, tenant_slug):
    agents = _startable_agents()
    data = request.POST if request.method == "POST" else None
    chosen = (data or request.GET).get("agent", "")
    if chosen not in agents and len(agents) == 1 and data is None:
        chosen = next(iter(agents))
    versions = [v.version for v in agents[chosen][1]] if chosen in agents else []
    form = RunStartForm(
        data, agents=list(agents), versions=versions, initial={"agent": chosen, "input": "{}"}
    )
    status = 200
    if data is not None:
        if form.is_valid():
            try:
                run = services.run_create(
                    tenant=request.tenant,
                    agent=agents[form.cleaned_data["agent"]][0],
                    version=form.cleaned_data["version"],
                    input=form.cleaned_data["input"],
                    limits=form.cleaned_data["limits"],
                    actor=Actor(user=request.user),
                )
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                return redirect("run-detail", tenant_slug, run.pk)
        status = 400
    context = _start_context(request, form, agents, chosen)
    if is_partial(request):  # the agent changed: its versions and limits
        return render_page(request, "frontend/console/_run_agent_fields.html", context)
    context["has_agents"] = bool(agents)
    return render_page(request, "frontend/console/run_new.html", context, status=status)


urlpatterns = [
    path("", run_list, name="run-list"),
    path("new/", run_new, name="run-new"),
    path("<int:run_id>/", run_detail, name="run-detail"),
    path("<int:run_id>/cancel", run_cancel, name="run-cancel"),
]
