"""Platform staff's view of the trace store: read-only, except redaction rules, which
change through the service so the change is audited and takes effect at once."""

from django.contrib import admin

from controlplane.services import Actor, ServiceError
from tracing import services
from tracing.models import RedactionPolicy, Trace


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Trace)
class TraceAdmin(ReadOnlyAdmin):
    list_display = [
        "trace_id",
        "tenant",
        "name",
        "service_name",
        "status",
        "span_count",
        "start_time",
        "duration_ms",
    ]
    list_filter = ["tenant", "status"]
    search_fields = ["name", "service_name", "session_id"]
    ordering = ["-start_time"]


@admin.register(RedactionPolicy)
class RedactionPolicyAdmin(admin.ModelAdmin):
    list_display = ["tenant", "version", "updated_at"]
    readonly_fields = ["version", "updated_at"]

    def save_model(self, request, obj, form, change):
        try:
            saved = services.redaction_policy_update(
                tenant=obj.tenant,
                custom_patterns=obj.custom_patterns,
                drop_keys=obj.drop_keys,
                never_scan_keys=obj.never_scan_keys,
                actor=Actor(user=request.user),
            )
        except ServiceError as exc:
            self.message_user(request, f"Not saved: {exc}", level="error")
            return
        obj.pk, obj.version = saved.pk, saved.version
