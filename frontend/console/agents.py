"""Agents: a tenant's agents and their versions, creating an agent and uploading a bundle.

Uploads go through execution.services.agent_version_create, so a bundle gets exactly the
checks the API gives it (archive, manifest, entrypoint, tools, limits)."""

from django.conf import settings
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.services import Actor, ServiceError
from execution import selectors, services
from frontend import roles
from frontend.console.forms import AgentForm, BundleForm
from frontend.decorators import found_or_404, tenant_view
from frontend.render import render_page


def _agent_rows() -> list[dict]:
    rows = []
    for agent in selectors.agent_list():
        versions = sorted(agent.versions.all(), key=lambda v: v.version, reverse=True)
        latest = versions[0] if versions else None
        rows.append({"agent": agent, "latest": latest, "count": len(versions)})
    return rows


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.RUN)
def agent_list(request, tenant_slug):
    form = AgentForm(request.POST if request.method == "POST" else None)
    status = 200
    if form.is_bound:
        if form.is_valid():
            try:
                agent = services.agent_create(
                    tenant=request.tenant, actor=Actor(user=request.user), **form.cleaned_data
                )
            except ServiceError as exc:
                form.add_error("name", str(exc))
            else:
                return redirect("agent-detail", tenant_slug, agent.pk)
        status = 400
    context = {"rows": _agent_rows(), "form": form}
    return render_page(request, "frontend/console/agents.html", context, status=status)


def _detail(request, agent, form, status=200):
    versions = list(selectors.agent_version_list(agent=agent))
    context = {
        "agent": agent,
        "versions": versions,
        "form": form,
        "max_bytes": settings.EXECUTION_BUNDLE_MAX_BYTES,
    }
    return render_page(request, "frontend/console/agent.html", context, status=status)


@require_GET
@tenant_view
def agent_detail(request, tenant_slug, agent_id: int):
    return _detail(
        request, found_or_404(selectors.agent_get(agent_id=agent_id), "agent"), BundleForm()
    )


@require_POST
@tenant_view
@roles.requires(roles.RUN)
def agent_version_upload(request, tenant_slug, agent_id: int):
    agent = found_or_404(selectors.agent_get(agent_id=agent_id), "agent")
    form = BundleForm(request.POST, request.FILES)
    if not form.is_valid():
        return _detail(request, agent, form, status=400)
    upload = form.cleaned_data["bundle"]
    limit = settings.EXECUTION_BUNDLE_MAX_BYTES
    if upload.size > limit:
        # Refused before reading it into memory, with the API's status for it.
        form.add_error("bundle", f"The bundle is {upload.size} bytes, over the limit of {limit}.")
        return _detail(request, agent, form, status=413)
    try:
        version = services.agent_version_create(
            agent=agent, filename=upload.name, data=upload.read(), actor=Actor(user=request.user)
        )
    except ServiceError as exc:
        form.add_error("bundle", str(exc))
        return _detail(request, agent, form, status=400)
    url = reverse("agent-detail", args=[tenant_slug, agent.pk])
    return redirect(f"{url}#v{version.version}")


urlpatterns = [
    path("", agent_list, name="agent-list"),
    path("<int:agent_id>/", agent_detail, name="agent-detail"),
    path("<int:agent_id>/versions", agent_version_upload, name="agent-version-upload"),
]
