"""Replay on the run page: replay a run, fork it from a step, settle a call in doubt,
and two runs side by side, step by step.

Writes go through replay's services with the person as the actor, as the API's do; the
forms post JSON the same way the API takes it, and a bad one is a 400 naming the field.
"""

import json
from itertools import zip_longest

from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from controlplane.services import Actor, ServiceError
from execution import selectors as execution_selectors
from execution.budget import BudgetRefused
from frontend import roles
from frontend.console import run_present
from frontend.decorators import found_or_404, is_partial, tenant_view
from frontend.render import render_page
from replay import selectors, services

POLL = "every 1s"


def panel_context(run) -> dict:
    """What the run page shows of replay: lineage, and the call in doubt if any."""
    return {"lineage": selectors.run_lineage(run=run), "in_doubt": selectors.run_in_doubt(run=run)}


def _refused(request, run, message: str, status: int = 400):
    return render_page(
        request,
        "frontend/console/run_refused.html",
        {"run": run, "notice": message},
        status=status,
    )


def _json_field(request, name: str):
    raw = request.POST.get(name, "")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ServiceError(f"{name}: not JSON ({exc})") from None


def _derived(request, source, create):
    """Make a run from `source` and show the two side by side; a refusal says why."""
    try:
        run = create()
    except services.SourceBusy as exc:
        return _refused(request, source, str(exc), status=409)
    except (ServiceError, BudgetRefused) as exc:
        return _refused(request, source, str(exc))
    return redirect("run-compare", request.tenant.slug, source.pk, run.pk)


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def run_replay(request, tenant_slug, run_id: int):
    source = found_or_404(execution_selectors.run_get(run_id=run_id), "run")
    actor = Actor(user=request.user)
    return _derived(request, source, lambda: services.run_replay_create(source=source, actor=actor))


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def run_fork(request, tenant_slug, run_id: int):
    source = found_or_404(execution_selectors.run_get(run_id=run_id), "run")

    def create():
        step, kind = request.POST.get("step", ""), request.POST.get("kind", "result")
        if not step.isdigit():
            raise ServiceError(f"step: {step!r} is not a step number")
        if kind not in ("result", "request"):
            raise ServiceError("kind: result or request")
        override = {kind: _json_field(request, "override")}
        return services.run_fork_create(
            source=source, step=int(step), actor=Actor(user=request.user), **override
        )

    return _derived(request, source, create)


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def run_reconcile(request, tenant_slug, run_id: int):
    run = found_or_404(execution_selectors.run_get(run_id=run_id), "run")
    action = request.POST.get("action", "")
    try:
        result = _json_field(request, "result") if action == "result" else None
        services.run_reconcile(
            run=run, action=action, result=result, actor=Actor(user=request.user)
        )
    except ServiceError as exc:
        return _refused(request, run, str(exc))
    return redirect("run-detail", tenant_slug, run.pk)


def compare_rows(left_steps, right_steps) -> tuple[list[dict], int | None]:
    """The two journals side by side by step number, and the first step that differs
    (kind, request or result)."""
    rows, first = [], None
    for a, b in zip_longest(left_steps, right_steps):
        same = (
            a is not None
            and b is not None
            and (a.kind, a.request_hash, a.result, a.is_error)
            == (b.kind, b.request_hash, b.result, b.is_error)
        )
        step = (a or b).step
        if not same and first is None:
            first = step
        rows.append({"step": step, "left": a, "right": b, "same": same, "first": step == first})
    return rows, first


@require_GET
@tenant_view
def run_compare(request, tenant_slug, run_id: int, other_id: int):
    left = found_or_404(execution_selectors.run_get(run_id=run_id), "run")
    right = found_or_404(execution_selectors.run_get(run_id=other_id), "run")
    left_steps, right_steps = (
        selectors.steps_readable(execution_selectors.run_steps(run=r)[:2000], tenant_id=r.tenant_id)
        for r in (left, right)
    )
    rows, first = compare_rows(left_steps, right_steps)
    summaries = {
        id(s): r
        for s, r in zip(
            left_steps + right_steps, run_present.step_rows(left_steps + right_steps), strict=True
        )
    }
    for row in rows:
        row["left_summary"] = summaries.get(id(row["left"]))
        row["right_summary"] = summaries.get(id(row["right"]))
    active = run_present.is_active(left) or run_present.is_active(right)
    context = {
        "left": left,
        "right": right,
        "rows": rows,
        "first": first,
        "active": active,
        "poll": POLL,
        "lineage": selectors.run_lineage(run=right),
    }
    template = (
        "frontend/console/_run_compare.html"
        if is_partial(request)
        else "frontend/console/run_compare.html"
    )
    return render_page(request, template, context)


urlpatterns = [
    path("<int:run_id>/replay", run_replay, name="run-replay"),
    path("<int:run_id>/fork", run_fork, name="run-fork"),
    path("<int:run_id>/reconcile", run_reconcile, name="run-reconcile"),
    path("<int:run_id>/compare/<int:other_id>/", run_compare, name="run-compare"),
]
