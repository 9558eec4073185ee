"""What the settings pages share: a service's refusal shown in the form that asked."""

import re

from django import forms

from controlplane.services import ServiceError

# A service's message that starts with a field's name ("schema: ...", "drop_keys must
# ...", "custom_patterns[2].pattern ...") is about that field.
_LEADING_NAME = re.compile(r"^([a-z_]+)\b")


def call_service(form: forms.Form, service, *, explain=None, **kwargs):
    """Run `service(**kwargs)` and return its result. A ServiceError becomes the form's
    error, on the field its message starts with or else on the whole form (`explain`
    may reword it first): the caller checks `form.errors` and renders the page again."""
    try:
        return service(**kwargs)
    except ServiceError as exc:
        message = str(exc)
        name = _LEADING_NAME.match(message)
        field = name[1] if name and name[1] in form.fields else None
        form.add_error(field, explain(message) if explain else message)
        return None


def form_messages(form: forms.Form) -> list[str]:
    """Every error of a form, for a form that shows them in one place (a table row)."""
    return [message for errors in form.errors.values() for message in errors]
