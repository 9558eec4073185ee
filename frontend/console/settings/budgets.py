"""Settings › Budgets: caps with thresholds and their spend as bars; admins add and
delete them, and choose whether calls go ahead when the budget store cannot be reached
(billing.services, audited)."""

from django import forms
from django.http import Http404
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from billing import selectors, services
from billing.models import BudgetPeriod, BudgetScope
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


class BudgetForm(forms.Form):
    scope = forms.ChoiceField(choices=BudgetScope.choices)
    agent = forms.CharField(required=False, max_length=255, help_text="for an agent or per-run cap")
    user = forms.CharField(
        required=False,
        max_length=255,
        help_text="for a user cap: the user id the spans carry (user.id, enduser.id, e-mail)",
    )
    period = forms.ChoiceField(choices=BudgetPeriod.choices, initial=BudgetPeriod.MONTH)
    cap_usd = forms.DecimalField(label="Cap (USD)", min_value=0, max_digits=14, decimal_places=6)
    thresholds = forms.CharField(
        initial="0.5, 0.8, 1.0", help_text="fractions of the cap that raise an alert"
    )

    def clean_thresholds(self):
        try:
            return [float(t) for t in self.cleaned_data["thresholds"].split(",") if t.strip()]
        except ValueError:
            raise forms.ValidationError("fractions such as 0.5, 0.8, 1.0") from None


class StoreForm(forms.Form):
    fail_open = forms.BooleanField(
        required=False,
        label="Let calls go ahead when the budget store cannot be reached",
        help_text="off (the default): such calls are refused and the run stops with reason "
        "budget; on: they run unheld, and each run's first one is in the audit log",
    )


def _create(*, actor, tenant, **data):
    data["cap_usd"] = str(data["cap_usd"])
    return services.budget_create(tenant=tenant, data=data, actor=actor)


def budget_rows() -> list[dict]:
    """Each budget with its spend, and where its thresholds fall on its bar."""
    rows = selectors.budgets_with_spend(selectors.budget_list())
    for row in rows:
        thresholds = sorted(row["thresholds"])
        cap = float(row["cap_usd"])
        row["cap"] = cap
        row["spent"] = float(row["spent_usd"]) if row["spent_usd"] is not None else None
        # <meter>: past the first threshold it shows "high", past the last "over".
        row["low"] = cap * thresholds[0] if thresholds else cap
        row["high"] = cap * thresholds[-1] if thresholds else cap
        row["percent"] = round(100 * row["spent"] / cap) if row["spent"] is not None else None
    return rows


def _page(request, *, form=None, store_form=None, status=200):
    context = {
        "budgets": budget_rows(),
        "form": form or BudgetForm(),
        "store_form": store_form or StoreForm(initial=selectors.account_json()),
    }
    return render_settings(request, "frontend/console/settings/budgets.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def budget_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = BudgetForm(request.POST)
    budget = submit(request, form, _create)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(request, f"Budget {budget.pk} holds from now on.", "settings-budgets")


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def budget_delete(request, tenant_slug, budget_id):
    budget = selectors.budget_get(budget_id=budget_id)
    if budget is None:
        raise Http404("no such budget")
    from controlplane.services import Actor

    services.budget_delete(budget=budget, actor=Actor(user=request.user))
    return saved(request, f"Budget {budget_id} is deleted.", "settings-budgets")


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def budget_store(request, tenant_slug):
    form = StoreForm(request.POST)
    account = submit(request, form, services.account_set)
    if form.errors:
        return _page(request, store_form=form, status=400)
    said = "go ahead unheld" if account.fail_open else "are refused"
    return saved(
        request, f"Calls {said} when the budget store cannot be reached.", "settings-budgets"
    )


urlpatterns = [
    path("", budget_list, name="settings-budgets"),
    path("store", budget_store, name="settings-budget-store"),
    path("<int:budget_id>/delete", budget_delete, name="settings-budget-delete"),
]
