"""Platform staff's view of billing: every tenant's budgets with their spend, the
tenants' billing settings, the price book and the ledger."""

from django.contrib import admin
from django.utils import timezone

from billing import services
from billing.budgets import as_window
from billing.models import BillingAccount, Budget, LedgerEntry, PriceBook, PriceEntry
from billing.prices import usd
from billing.store import Unreachable, get_store
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "tenant",
        "scope",
        "agent",
        "run",
        "period",
        "cap",
        "spent",
        "thresholds",
    ]
    list_filter = ["scope", "period", "tenant"]
    search_fields = ["agent", "tenant__slug"]
    readonly_fields = [
        "tenant",
        "scope",
        "agent",
        "run",
        "period",
        "cap_nusd",
        "thresholds",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="cap (USD)")
    def cap(self, budget):
        return usd(budget.cap_nusd)

    @admin.display(description="spent this period (USD)")
    def spent(self, budget):
        if budget.scope == "run" and budget.run_id is None:
            return "per run"
        window = as_window(budget, day=timezone.now().date(), run_id=None)
        try:
            return usd(get_store().state([window])[0][0])
        except Unreachable:
            return "store unreachable"

    def has_add_permission(self, request):
        return False  # budgets change through the API and the console, audited


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    list_display = ["tenant", "fail_open"]
    list_filter = ["fail_open"]
    fields = ["tenant", "fail_open"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant"] if obj else []

    def save_model(self, request, obj, form, change):
        with tenant_scope(obj.tenant):
            saved = services.account_set(
                tenant=obj.tenant, fail_open=obj.fail_open, actor=Actor(user=request.user)
            )
        obj.pk = saved.pk


class PriceEntryInline(admin.TabularInline):
    model = PriceEntry
    extra = 0
    can_delete = False
    fields = [
        "provider",
        "model",
        "aliases",
        "effective_from",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cache_read_usd_per_mtok",
        "cache_write_usd_per_mtok",
    ]
    readonly_fields = fields


@admin.register(PriceBook)
class PriceBookAdmin(admin.ModelAdmin):
    list_display = ["version", "loaded_at", "source"]
    readonly_fields = [
        "version",
        "source",
        "loaded_at",
        "tool_call_usd",
        "sandbox_cpu_second_usd",
        "storage_database_gb_month_usd",
        "storage_standard_gb_month_usd",
        "storage_standard_ia_gb_month_usd",
        "storage_glacier_ir_gb_month_usd",
    ]
    inlines = [PriceEntryInline]

    def has_add_permission(self, request):
        return False  # new versions come from `manage.py load_prices FILE`


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "tenant", "run", "entry", "kind", "amount_nusd"]
    list_filter = ["entry", "kind", "tenant"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
