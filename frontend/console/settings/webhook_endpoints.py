"""Settings › Webhook endpoints: where alerts are delivered, with each endpoint's recent
delivery attempts; admins add one (its signing secret is shown once, in the response
that created it), change its URL or format, send it a test message and delete it
(alerts.services, audited)."""

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from alerts import selectors, services
from alerts.models import EndpointFormat
from controlplane.services import Actor
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import found_or_404, tenant_view

RECENT_DELIVERIES = 50


class EndpointForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=2000,
        help_text="https://… or mailto:address; the tools' egress rules apply",
    )
    format = forms.ChoiceField(
        choices=EndpointFormat.choices,
        initial=EndpointFormat.STANDARD,
        help_text="standard: Standard Webhooks JSON; slack: a Slack incoming-webhook body",
    )


def _create(*, actor, tenant, **cleaned):
    return services.webhook_endpoint_create(tenant=tenant, data=cleaned, actor=actor)


def _update(*, actor, tenant, endpoint, **cleaned):
    return services.webhook_endpoint_update(endpoint=endpoint, data=cleaned, actor=actor)


def _page(request, *, form=None, created=None, status=200):
    context = {
        "endpoints": selectors.webhook_endpoint_list(),
        "form": form or EndpointForm(),
        "created": created,
    }
    response = render_settings(
        request, "frontend/console/settings/webhook_endpoints.html", context, status
    )
    if created:
        response["Cache-Control"] = "no-store"  # the secret is in this page only
    return response


def _endpoint(endpoint_id: int):
    return found_or_404(selectors.webhook_endpoint_get(endpoint_id=endpoint_id), "endpoint")


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def endpoint_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = EndpointForm(request.POST)
    endpoint = submit(request, form, _create)
    if form.errors:
        return _page(request, form=form, status=400)
    return _page(request, created=endpoint)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def endpoint_edit(request, tenant_slug, endpoint_id: int):
    endpoint = _endpoint(endpoint_id)
    initial = {"url": endpoint.url, "format": endpoint.format}
    form = EndpointForm(request.POST if request.method == "POST" else None, initial=initial)
    status = 200
    if request.method == "POST":
        submit(request, form, _update, endpoint=endpoint)
        if not form.errors:
            return saved(
                request, f"Endpoint {endpoint.pk} is changed.", "settings-webhook-endpoints"
            )
        status = 400
    context = {
        "endpoint": endpoint,
        "form": form,
        "deliveries": selectors.delivery_list(endpoint=endpoint)[:RECENT_DELIVERIES],
    }
    return render_settings(
        request, "frontend/console/settings/webhook_endpoint.html", context, status=status
    )


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def endpoint_test(request, tenant_slug, endpoint_id: int):
    endpoint = _endpoint(endpoint_id)
    webhook_id = services.webhook_endpoint_test(endpoint=endpoint, actor=Actor(user=request.user))
    return saved(
        request,
        f"A test message ({webhook_id}) is on its way to {endpoint.url}; its attempts are listed on the endpoint's page.",
        "settings-webhook-endpoints",
    )


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def endpoint_delete(request, tenant_slug, endpoint_id: int):
    endpoint = _endpoint(endpoint_id)
    services.webhook_endpoint_delete(endpoint=endpoint, actor=Actor(user=request.user))
    return saved(request, f"Endpoint {endpoint_id} is deleted.", "settings-webhook-endpoints")


urlpatterns = [
    path("", endpoint_list, name="settings-webhook-endpoints"),
    path("<int:endpoint_id>/", endpoint_edit, name="settings-webhook-endpoint"),
    path("<int:endpoint_id>/test", endpoint_test, name="settings-webhook-endpoint-test"),
    path("<int:endpoint_id>/delete", endpoint_delete, name="settings-webhook-endpoint-delete"),
]
