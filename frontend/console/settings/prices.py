"""Settings › Prices: the effective price book; admins set the tenant's own price for a
model (billing.services.price_overrides_set, audited) and its storage prices per place
(billing.services.storage_prices_set, the service PUT /api/v1/prices `storage` uses)."""

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods

from billing import selectors, services
from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


class OverrideForm(forms.Form):
    provider = forms.CharField(max_length=64, initial="anthropic")
    model = forms.CharField(max_length=255)
    input_usd_per_mtok = forms.DecimalField(label="Input (USD per million tokens)", min_value=0)
    output_usd_per_mtok = forms.DecimalField(label="Output", min_value=0)
    cache_read_usd_per_mtok = forms.DecimalField(label="Cache read", min_value=0, initial=0)
    cache_write_usd_per_mtok = forms.DecimalField(label="Cache write", min_value=0, initial=0)


class StoragePriceForm(forms.Form):
    """The tenant's USD per GB-month for each place; a place left blank is charged at
    the book's price."""

    database = forms.DecimalField(label="Database", min_value=0, required=False)
    STANDARD = forms.DecimalField(label="S3 STANDARD", min_value=0, required=False)
    STANDARD_IA = forms.DecimalField(label="S3 STANDARD_IA", min_value=0, required=False)
    GLACIER_IR = forms.DecimalField(label="S3 GLACIER_IR", min_value=0, required=False)


def _set(*, actor, tenant, **entry):
    """One override added to (or replacing the same model's in) the tenant's list."""
    book = selectors.price_book_effective()
    key = (entry["provider"].lower(), entry["model"].lower())
    kept = [e for e in book["overrides"] if (e["provider"], e["model"].lower()) != key]
    entry = {k: str(v) if k.endswith("_mtok") else v for k, v in entry.items()}
    return services.price_overrides_set(tenant=tenant, entries=[*kept, entry], actor=actor)


def _set_storage(*, actor, tenant, **prices):
    own = {place: str(price) for place, price in prices.items() if price is not None}
    return services.storage_prices_set(tenant=tenant, prices=own, actor=actor)


def _page(request, *, form=None, storage_form=None, status=200):
    book = selectors.price_book_effective()
    context = {
        "book": book,
        "form": form or OverrideForm(),
        "storage_form": storage_form or StoragePriceForm(initial=book["storage_overrides"]),
    }
    return render_settings(request, "frontend/console/settings/prices.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def price_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = OverrideForm(request.POST)
    submit(request, form, _set)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(
        request, f"{form.cleaned_data['model']} is priced for this tenant.", "settings-prices"
    )


@require_http_methods(["POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def storage_prices(request, tenant_slug):
    form = StoragePriceForm(request.POST)
    submit(request, form, _set_storage)
    if form.errors:
        return _page(request, storage_form=form, status=400)
    return saved(request, "The tenant's storage prices are set.", "settings-prices")


urlpatterns = [
    path("", price_list, name="settings-prices"),
    path("storage/", storage_prices, name="settings-prices-storage"),
]
