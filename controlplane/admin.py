"""The admin console for platform staff: tenants, members, API keys, audit log.

Changes go through the services so each one lands in the audit log.
"""

from django import forms
from django.contrib import admin, messages

from controlplane import services
from controlplane.models import ApiKey, AuditEvent, Membership, Scope, Tenant


def _actor(request) -> services.Actor:
    return services.Actor(user=request.user)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            services.audit_record(
                tenant=obj,
                actor=_actor(request),
                action="tenant.update",
                target=obj,
                data={"changed": form.changed_data},
            )
        else:
            created = services.tenant_create(slug=obj.slug, name=obj.name, actor=_actor(request))
            obj.pk = created.pk


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    autocomplete_fields = ["user", "tenant"]

    def save_model(self, request, obj, form, change):
        saved = services.membership_add(
            tenant=obj.tenant, user=obj.user, role=obj.role, actor=_actor(request)
        )
        obj.pk = saved.pk


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.INGEST]
    )

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "tenant",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["tenant"]
    actions = ["revoke"]
    readonly_fields = [
        "prefix",
        "key_hash",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "name", "scopes"]
        return ["tenant", "name", "scopes", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["tenant", "scopes", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = services.api_key_create(
            tenant=obj.tenant,
            name=obj.name,
            scopes=form.cleaned_data["scopes"],
            actor=_actor(request),
        )
        obj.pk = key.pk
        # The only time the key is ever shown.
        messages.warning(request, f"Copy this key now, it will not be shown again: {raw}")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key, actor=_actor(request))
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "tenant",
        "action",
        "target_type",
        "target_id",
        "actor_user",
        "actor_api_key",
    ]
    list_filter = ["tenant", "action"]
    search_fields = ["action", "target_id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
