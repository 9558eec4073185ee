"""Settings › Tools: the tenant's webhook tools with their JSON schema; admins define one."""

import json

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods

from execution import selectors, services
from execution.models import ToolDefinition
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view

SCHEMA_EXAMPLE = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}


class ToolForm(forms.ModelForm):
    schema = forms.JSONField(
        initial=SCHEMA_EXAMPLE,
        label="Arguments (JSON schema)",
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="The arguments the agent sends, checked before the call",
    )
    credential = forms.ChoiceField(required=False, help_text="Sent in the header below")
    url = forms.URLField(
        max_length=500, assume_scheme="https", label="URL (arguments are POSTed there as JSON)"
    )
    timeout_seconds = forms.FloatField(min_value=0.1, initial=10)

    class Meta:
        model = ToolDefinition
        fields = [
            "name",
            "description",
            "url",
            "schema",
            "credential",
            "credential_header",
            "credential_format",
            "slow",
            "timeout_seconds",
            "fallback",
            "rate_per_minute",
        ]
        labels = {"slow": "Slow (runs on the tools queue)"}

    def __init__(self, *args, credentials: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["credential"].choices = [("", "none"), *[(c, c) for c in credentials]]


def _page(request, *, form=None, status=200):
    credentials = [c.name for c in selectors.credential_list()]
    tools = list(selectors.tool_list())
    for tool in tools:
        tool.schema_text = json.dumps(tool.schema, indent=2)
    context = {"tools": tools, "form": form or ToolForm(credentials=credentials)}
    return render_settings(request, "frontend/console/settings/tools.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def tool_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    credentials = [c.name for c in selectors.credential_list()]
    form = ToolForm(request.POST, credentials=credentials)
    tool = submit(request, form, services.tool_definition_create)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(request, f"Tool {tool.name} is defined: agents may list it.", "settings-tools")


urlpatterns = [path("", tool_list, name="settings-tools")]
