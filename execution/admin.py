"""Platform staff's view of managed execution: read-only (runs change through the API
and the workers; credentials are not shown at all)."""

from django.contrib import admin

from execution.models import Agent, AgentVersion, Run
from replay.models import JournalStep


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AgentVersionInline(admin.TabularInline):
    model = AgentVersion
    fields = ["version", "bundle_sha256", "bundle_format", "bundle_size", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name"]
    inlines = [AgentVersionInline]


class JournalStepInline(admin.TabularInline):
    model = JournalStep
    fields = ["step", "kind", "is_error", "duration_ms", "redacted_result"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="result (redacted)")
    def redacted_result(self, step):
        # Staff see the journal as the tenant's viewers do: the value whole is the
        # tenant's, for its own admins to ask for.
        from replay.selectors import journal_redacted

        return journal_redacted(tenant_id=step.tenant_id, value=step.result)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "tenant",
        "agent",
        "status",
        "stop_reason",
        "step_count",
        "trace_id",
        "created_at",
    ]
    list_filter = ["tenant", "status", "stop_reason"]
    search_fields = ["trace_id", "agent__name"]
    ordering = ["-created_at"]
    inlines = [JournalStepInline]
