"""Settings › Audit log: every change to the tenant, newest first, filtered by actor,
action and object, a page at a time."""

import re

from django import forms
from django.core.paginator import Paginator
from django.urls import path
from django.views.decorators.http import require_GET

from controlplane import selectors
from frontend.console.settings.render import render_settings
from frontend.decorators import tenant_view

PAGE = 50
OBJECT = re.compile(r"^(?P<type>[a-z_]+)(?::(?P<id>[\w.:-]+))?$")


class FilterForm(forms.Form):
    actor = forms.CharField(
        required=False, max_length=150, help_text='a user, "api-key:<prefix>" or "system"'
    )
    action = forms.ChoiceField(required=False)
    object = forms.CharField(required=False, max_length=130, help_text='"apikey" or "apikey:12"')
    page = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args, actions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", "any"), *[(a, a) for a in actions]]

    def clean_object(self) -> dict:
        raw = self.cleaned_data["object"].strip().lower()
        if not raw:
            return {}
        match = OBJECT.match(raw)
        if match is None:
            raise forms.ValidationError(
                'write a type, or a type and an id: "apikey" or "apikey:12"'
            )
        return {"target_type": match["type"], "target_id": match["id"] or ""}


@require_GET
@tenant_view
def audit_list(request, tenant_slug):
    form = FilterForm(request.GET, actions=selectors.audit_actions())
    page, status = None, 200
    if form.is_valid():
        events = selectors.audit_event_list(
            actor=form.cleaned_data["actor"].strip(),
            action=form.cleaned_data["action"],
            **form.cleaned_data["object"],
        )
        paginator = Paginator(events, PAGE)
        number = form.cleaned_data["page"] or 1
        if number <= max(paginator.num_pages, 1):
            page = paginator.page(number)
        else:
            n = paginator.num_pages
            form.add_error(
                "page", f"there {'is' if n == 1 else 'are'} only {n} page{'s' * (n > 1)}"
            )
    if form.errors:
        status = 400
    context = {"form": form, "page": page}
    return render_settings(request, "frontend/console/settings/audit.html", context, status)


urlpatterns = [path("", audit_list, name="settings-audit")]
