"""Settings › Alert rules: which detectors run, their thresholds, where their alerts go
and whether they stop the run; admins create, change and delete them (alerts.services,
audited)."""

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from alerts import selectors, services
from alerts.models import Detector, WebhookEndpoint
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import found_or_404, tenant_view


class RuleForm(forms.Form):
    detector = forms.ChoiceField(choices=Detector.choices)
    agent = forms.CharField(required=False, max_length=255, help_text="blank: every agent")
    threshold = forms.FloatField(
        required=False,
        min_value=0,
        help_text="blank: the detector's default (loop 3 repeats, error_burst 0.5 of calls, "
        "cost_spike 5× the median, stuck_run 300 s, budget every threshold)",
    )
    endpoints = forms.ModelMultipleChoiceField(
        queryset=WebhookEndpoint.all_tenants.none(),  # set per request: see __init__
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="where its alerts are delivered",
    )
    stop_run = forms.BooleanField(
        required=False, label="Stop the run", help_text="a managed run that raises it stops"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The scoped manager, read inside the request's tenant scope: the tenant's own.
        self.fields["endpoints"].queryset = WebhookEndpoint.objects.order_by("id")

    @classmethod
    def of(cls, rule, data=None):
        initial = {
            "detector": rule.detector,
            "agent": rule.agent,
            "threshold": rule.threshold,
            "endpoints": list(rule.endpoints.all()),
            "stop_run": rule.stop_run,
        }
        return cls(data, initial=initial)


def _data(cleaned: dict) -> dict:
    return {**cleaned, "endpoints": [e.pk for e in cleaned["endpoints"]]}


def _create(*, actor, tenant, **cleaned):
    return services.alert_rule_create(tenant=tenant, data=_data(cleaned), actor=actor)


def _update(*, actor, tenant, rule, **cleaned):
    return services.alert_rule_update(rule=rule, data=_data(cleaned), actor=actor)


def _page(request, *, form=None, status=200):
    context = {
        "rules": [
            {"rule": r, "threshold": services.rule_threshold(r)}
            for r in selectors.alert_rule_list()
        ],
        "form": form or RuleForm(),
    }
    return render_settings(request, "frontend/console/settings/alert_rules.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def rule_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = RuleForm(request.POST)
    rule = submit(request, form, _create)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(
        request, f"Rule {rule.pk} ({rule.detector}) watches from now on.", "settings-alert-rules"
    )


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def rule_edit(request, tenant_slug, rule_id: int):
    rule = found_or_404(selectors.alert_rule_get(rule_id=rule_id), "alert rule")
    form = RuleForm.of(rule, request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        submit(request, form, _update, rule=rule)
        if not form.errors:
            return saved(request, f"Rule {rule.pk} is changed.", "settings-alert-rules")
        status = 400
    context = {"rule": rule, "form": form}
    return render_settings(
        request, "frontend/console/settings/alert_rule.html", context, status=status
    )


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def rule_delete(request, tenant_slug, rule_id: int):
    rule = found_or_404(selectors.alert_rule_get(rule_id=rule_id), "alert rule")
    from controlplane.services import Actor

    services.alert_rule_delete(rule=rule, actor=Actor(user=request.user))
    return saved(request, f"Rule {rule_id} is deleted.", "settings-alert-rules")


urlpatterns = [
    path("", rule_list, name="settings-alert-rules"),
    path("<int:rule_id>/", rule_edit, name="settings-alert-rule"),
    path("<int:rule_id>/delete", rule_delete, name="settings-alert-rule-delete"),
]
