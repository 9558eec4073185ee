"""The login form, throttled: guessing passwords gets a few tries, then waits."""

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from controlplane import throttle


class LoginForm(AuthenticationForm):
    throttled: throttle.Throttled | None = None

    def clean(self):
        attempt = throttle.Attempt(
            "login",
            throttle.client_address(self.request.META),
            self.cleaned_data.get("username") or "",
        )
        try:
            attempt.check()
        except throttle.Throttled as exc:
            # Checked before the password, so the right one is refused too while it lasts.
            self.throttled = exc
            raise forms.ValidationError(
                f"Too many failed attempts. Try again in {exc.retry_after} seconds.",
                code="throttled",
            ) from None
        try:
            return super().clean()
        except forms.ValidationError:
            attempt.failed()
            raise
