"""Settings › Credentials: the vault's entries by name. A value is written, never shown:
admins store a new one or replace one by its name."""

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods

from execution import selectors, services
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


class CredentialForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="Tools refer to it by this name")
    value = forms.CharField(
        max_length=10_000,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Encrypted at rest; never shown again, never sent to agents",
    )


def _page(request, *, form=None, status=200):
    context = {"credentials": selectors.credential_list(), "form": form or CredentialForm()}
    return render_settings(request, "frontend/console/settings/credentials.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def credential_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = CredentialForm(request.POST)
    submit(request, form, services.credential_set)
    if form.errors:
        return _page(request, form=form, status=400)
    name = form.cleaned_data["name"]
    return saved(request, f"Credential {name} is stored.", "settings-credentials")


urlpatterns = [path("", credential_list, name="settings-credentials")]
