"""Settings › Allowed hosts: the hosts the tenant's tools may call; admins add one."""

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods

from execution import selectors, services
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


class HostForm(forms.Form):
    host = forms.CharField(max_length=255, help_text="api.example.com, *.example.com or host:port")


def _page(request, *, form=None, status=200):
    context = {"hosts": selectors.allowed_host_list(), "form": form or HostForm()}
    return render_settings(request, "frontend/console/settings/allowed_hosts.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def allowed_host_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = HostForm(request.POST)
    allowed = submit(request, form, services.allowed_host_add)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(request, f"Tools may call {allowed.host}.", "settings-allowed-hosts")


urlpatterns = [path("", allowed_host_list, name="settings-allowed-hosts")]
