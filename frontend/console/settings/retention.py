"""Settings › Retention: the days per tier (the `/api/v1/retention` policy, audited),
per-agent overrides, legal holds, and the bytes stored per tier."""

import orjson
from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods

from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view
from tracing.retention import selectors, services


class RetentionForm(forms.Form):
    hot_days = forms.IntegerField(min_value=0, help_text="rows and payloads as ingested")
    warm_days = forms.IntegerField(min_value=0, help_text="then packed into one bundle a trace")
    cold_days = forms.IntegerField(min_value=0, help_text="then in a cheaper storage class")
    extended_days = forms.IntegerField(
        min_value=0, help_text="at least this long for alerted or marked traces"
    )
    agents = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Per agent",
        help_text='JSON, e.g. {"support": {"hot_days": 1}}',
    )

    def clean_agents(self):
        text = self.cleaned_data["agents"].strip()
        try:
            return orjson.loads(text) if text else {}
        except orjson.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None

    @classmethod
    def of(cls, effective) -> "RetentionForm":
        days = effective.as_dict()
        agents = days.pop("agents")
        return cls(initial={**days, "agents": orjson.dumps(agents).decode() if agents else ""})


def _page(request, *, form=None, status=200):
    effective = selectors.retention_policy_get()
    context = {
        "days": effective.as_dict(),
        "form": form or RetentionForm.of(effective),
        "holds": list(selectors.legal_hold_list()[:100]),
        "storage": selectors.storage_usage(),
    }
    return render_settings(request, "frontend/console/settings/retention.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def retention_policy(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = RetentionForm(request.POST)
    submit(request, form, services.retention_policy_update)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(request, "Saved: the next retention run applies it.", "settings-retention")


urlpatterns = [path("", retention_policy, name="settings-retention")]
