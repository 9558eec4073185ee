"""Settings › API keys: the tenant's keys with their scopes and last use; admins create
one (the key is shown once, in the response that created it) and revoke them."""

from django import forms
from django.http import Http404
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from controlplane import selectors, services
from controlplane.models import Scope
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


class CreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.INGEST]
    )


def _page(request, *, form=None, created=None, status=200):
    context = {"keys": selectors.api_key_list(), "form": form or CreateForm(), "created": created}
    response = render_settings(request, "frontend/console/settings/keys.html", context, status)
    if created:
        response["Cache-Control"] = "no-store"  # the key is in this page only
    return response


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def key_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = CreateForm(request.POST)
    created = submit(request, form, services.api_key_create)
    if form.errors:
        return _page(request, form=form, status=400)
    key, raw = created
    return _page(request, created={"key": key, "raw": raw})


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def key_revoke(request, tenant_slug, key_id):
    key = selectors.api_key_get(key_id=key_id)
    if key is None:
        raise Http404("no such key")
    services.api_key_revoke(key=key, actor=services.Actor(user=request.user))
    return saved(request, f"Key {key.name} ({key.prefix}…) is revoked.", "settings-keys")


urlpatterns = [
    path("", key_list, name="settings-keys"),
    path("<int:key_id>/revoke", key_revoke, name="settings-key-revoke"),
]
