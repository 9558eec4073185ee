"""Settings › Members: who belongs to the tenant, with which role; admins add people by
e-mail, change roles and remove members (a tenant always keeps an owner)."""

from django import forms
from django.http import Http404
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from controlplane import selectors, services
from controlplane.models import Role
from frontend import roles
from frontend.console.settings.forms import form_messages, saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view


class AddForm(forms.Form):
    email = forms.EmailField(max_length=150, label="E-mail")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


def _page(request, *, add_form=None, row_errors=None, added=None, status=200):
    members = selectors.membership_list(tenant=request.tenant)
    for member in members:
        member.errors = (row_errors or {}).get(member.pk, [])
    context = {
        "members": members,
        "add_form": add_form or AddForm(),
        "roles": Role.choices,
        "added": added,
    }
    response = render_settings(request, "frontend/console/settings/members.html", context, status)
    if added:
        response["Cache-Control"] = "no-store"  # a new user's password is in this page only
    return response


def _membership_or_404(membership_id: int):
    membership = selectors.membership_get(membership_id=membership_id)
    if membership is None:
        raise Http404("no such member")
    return membership


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def member_list(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = AddForm(request.POST)
    result = submit(request, form, services.member_add_by_email)
    if form.errors:
        return _page(request, add_form=form, status=400)
    membership, password = result
    return _page(request, added={"membership": membership, "password": password})


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def member_role(request, tenant_slug, membership_id):
    membership = _membership_or_404(membership_id)
    form = RoleForm(request.POST)
    submit(request, form, services.membership_add, user=membership.user)
    if form.errors:
        return _page(request, row_errors={membership.pk: form_messages(form)}, status=400)
    name, role = membership.user.get_username(), form.cleaned_data["role"]
    return saved(request, f"{name} is now {role}.", "settings-members")


@require_POST
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def member_remove(request, tenant_slug, membership_id):
    membership = _membership_or_404(membership_id)
    try:
        services.membership_remove(membership=membership, actor=services.Actor(user=request.user))
    except services.ServiceError as exc:
        return _page(request, row_errors={membership.pk: [str(exc)]}, status=400)
    return saved(request, f"{membership.user.get_username()} was removed.", "settings-members")


urlpatterns = [
    path("", member_list, name="settings-members"),
    path("<int:membership_id>/role", member_role, name="settings-member-role"),
    path("<int:membership_id>/remove", member_remove, name="settings-member-remove"),
]
