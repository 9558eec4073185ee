"""What the settings pages share: a form's data handed to a service, the service's
refusal shown in the form that asked, and the redirect after a change."""

import re

from django import forms
from django.contrib import messages
from django.shortcuts import redirect

from controlplane.services import Actor, ServiceError

# A service's message that starts with a field's name ("schema: ...", "drop_keys must
# ...", "custom_patterns[2].pattern ...") is about that field.
_LEADING_NAME = re.compile(r"^([a-z_]+)\b")


def submit(request, form: forms.Form, service, *, explain=None, **kwargs):
    """Validate `form`, then call `service` with its cleaned data, the tenant and the
    acting user (plus `kwargs`), and return the result. Bad input, or a ServiceError put
    on the field its message starts with (else on the whole form; `explain` may reword
    it), leaves `form.errors` set: the caller checks them and renders the page again."""
    if not form.is_valid():
        return None
    kwargs = {"tenant": request.tenant, **form.cleaned_data, **kwargs}
    try:
        return service(actor=Actor(user=request.user), **kwargs)
    except ServiceError as exc:
        message = str(exc)
        name = _LEADING_NAME.match(message)
        field = name[1] if name and name[1] in form.fields else None
        form.add_error(field, explain(message) if explain else message)
        return None


def saved(request, message: str, url_name: str):
    """After a change: say what happened, and show the page again (a reload does not
    post the form twice)."""
    messages.success(request, message)
    return redirect(url_name, tenant_slug=request.tenant.slug)


def form_messages(form: forms.Form) -> list[str]:
    """Every error of a form, for a form that shows them in one place (a table row)."""
    return [message for errors in form.errors.values() for message in errors]
