"""Platform staff's view of billing: every tenant's budgets and the price book."""

from django.contrib import admin

from billing.models import Budget, LedgerEntry, PriceBook, PriceEntry
from billing.prices import usd


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "scope", "agent", "run", "period", "cap", "thresholds"]
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

    def has_add_permission(self, request):
        return False  # budgets change through the API and the console, audited


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
        "storage_gb_month_usd",
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
