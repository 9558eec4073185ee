"""The admin console for platform staff, across tenants: tenants, members, API keys,
audit log. Tenants' own people use the console under /t/<slug>/ instead.

Changes go through the services so each one lands in the audit log.
"""

from django import forms
from django.contrib import admin, messages

from controlplane import services
from controlplane.models import ApiKey, AuditEvent, Membership, Role, Scope, Tenant


def _actor(request) -> services.Actor:
    return services.Actor(user=request.user)


class MembershipFormSet(forms.BaseInlineFormSet):
    """A tenant's members edited at once: the rows as saved must keep an owner."""

    def clean(self):
        super().clean()
        if any(self.errors) or self.instance.pk is None:
            return
        had_owner = Membership.all_tenants.filter(tenant=self.instance, role=Role.OWNER).exists()
        kept = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data and not self._should_delete_form(form)
        ]
        if had_owner and not any(row.get("role") == Role.OWNER for row in kept):
            raise forms.ValidationError(
                "a tenant always keeps an owner: make someone else owner first"
            )


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


def _save_memberships(request, tenant, formset) -> None:
    """The inline's rows through the services, so each change is audited: owners first
    (a new owner before the old one steps down), removals last."""
    actor = _actor(request)
    rows = formset.save(commit=False)
    replaced = []
    for membership in sorted(rows, key=lambda m: m.role != Role.OWNER):
        if membership.pk:
            before = Membership.all_tenants.get(pk=membership.pk)
            if before.user_id != membership.user_id:
                replaced.append(before)  # the row now names someone else
        services.membership_add(
            tenant=tenant, user=membership.user, role=membership.role, actor=actor
        )
    for membership in [*formset.deleted_objects, *replaced]:
        services.membership_remove(membership=membership, actor=actor)


class MembershipAdminForm(forms.ModelForm):
    actor = services.Actor.system()  # get_form sets the staff user

    class Meta:
        model = Membership
        fields = ["tenant", "user", "role"]

    def clean(self):
        data = super().clean()
        tenant = data.get("tenant") or getattr(self.instance, "tenant", None)
        user = data.get("user") or getattr(self.instance, "user", None)
        role = data.get("role")
        if tenant and user and role:
            existing = Membership.all_tenants.filter(tenant=tenant, user=user).first()
            problem = services.membership_change_problem(
                tenant=tenant, actor=self.actor, membership=existing, role=role
            )
            if problem:
                raise forms.ValidationError(problem)
        return data


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "created_at"]
    search_fields = ["slug", "name"]
    # The sweeps count is retention's, never a form's.
    readonly_fields = ["created_at", "payload_sweeps"]
    inlines = [MembershipInline]

    def save_formset(self, request, form, formset, change):
        if formset.model is Membership:
            _save_memberships(request, form.instance, formset)
        else:
            super().save_formset(request, form, formset, change)

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
    form = MembershipAdminForm

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.actor = _actor(request)
        return form

    def get_readonly_fields(self, request, obj=None):
        # A membership is one person in one tenant: another pair is another membership.
        return ["tenant", "user", "created_at"] if obj else ["created_at"]

    def save_model(self, request, obj, form, change):
        saved = services.membership_add(
            tenant=obj.tenant, user=obj.user, role=obj.role, actor=_actor(request)
        )
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        if obj is not None and services.membership_change_problem(
            tenant=obj.tenant, actor=_actor(request), membership=obj, role=None
        ):
            return False  # the tenant's last owner
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        services.membership_remove(membership=obj, actor=_actor(request))

    def delete_queryset(self, request, queryset):
        for membership in queryset:
            try:
                services.membership_remove(membership=membership, actor=_actor(request))
            except services.ServiceError as exc:
                self.message_user(request, f"{membership}: {exc}", messages.ERROR)


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

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the audit log keeps pointing at the key

    def save_model(self, request, obj, form, change):
        if change:
            services.api_key_rename(key=obj, name=form.cleaned_data["name"], actor=_actor(request))
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
