"""What the settings pages share: a service's refusal shown in the form that asked."""

from django import forms

from controlplane.services import ServiceError


def call_service(form: forms.Form, service, *, field: str | None = None, **kwargs):
    """Run `service(**kwargs)` and return its result. A ServiceError becomes the form's
    error (on `field`, or the whole form's): the caller checks `form.errors` and renders
    the page again with the message."""
    try:
        return service(**kwargs)
    except ServiceError as exc:
        form.add_error(field, str(exc))
        return None


def form_messages(form: forms.Form) -> list[str]:
    """Every error of a form, for a form that shows them in one place (a table row)."""
    return [message for errors in form.errors.values() for message in errors]
