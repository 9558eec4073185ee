"""Settings › Redaction: the tenant's own rules on top of the built-in detectors (the
`/api/v1/redaction-policy` rules), and a box that shows what ingest would store for a
text under the saved rules."""

import re

from django import forms
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from frontend import roles
from frontend.console.settings.forms import saved, submit
from frontend.console.settings.render import render_settings
from frontend.decorators import is_partial, tenant_view
from tracing import selectors, services

_INDEX = re.compile(r"^custom_patterns\[(\d+)\]\.?")


def _line_numbers(message: str) -> str:
    """The service's "custom_patterns[2].pattern ..." is the form's line 3."""
    index = _INDEX.match(message)
    return f"line {int(index[1]) + 1}: {message[index.end() :]}" if index else message


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class PolicyForm(forms.Form):
    custom_patterns = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Patterns",
        help_text="One a line: NAME = RE2 pattern, e.g. EMPLOYEE_ID = EMP-\\d{6}",
    )
    drop_keys = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Attributes never stored",
        help_text="One attribute key a line",
    )
    never_scan_keys = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Attributes stored as sent",
        help_text="One attribute key a line; not scanned",
    )

    scan_infrastructure = forms.BooleanField(
        required=False,
        label="Scan infrastructure attributes",
        help_text="server.*, net.*, network.* and url.* hosts: off, they name services",
    )

    def clean_custom_patterns(self) -> list[dict]:
        patterns = []
        for number, line in enumerate(_lines(self.cleaned_data["custom_patterns"]), start=1):
            name, equals, pattern = line.partition("=")
            if not equals or not name.strip() or not pattern.strip():
                raise forms.ValidationError(f"line {number}: write NAME = pattern")
            patterns.append({"name": name.strip(), "pattern": pattern.strip()})
        return patterns

    def clean_drop_keys(self) -> list[str]:
        return _lines(self.cleaned_data["drop_keys"])

    def clean_never_scan_keys(self) -> list[str]:
        return _lines(self.cleaned_data["never_scan_keys"])

    @classmethod
    def of(cls, policy) -> "PolicyForm":
        patterns = "\n".join(f"{p['name']} = {p['pattern']}" for p in policy.custom_patterns)
        return cls(
            initial={
                "custom_patterns": patterns,
                "drop_keys": "\n".join(policy.drop_keys),
                "never_scan_keys": "\n".join(policy.never_scan_keys),
                "scan_infrastructure": policy.scan_infrastructure,
            }
        )


class TestForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=20_000, strip=False)


def _page(request, *, form=None, test_form=None, preview=None, status=200):
    policy = selectors.redaction_policy_get()
    context = {
        "policy": policy,
        "form": form or PolicyForm.of(policy),
        "test_form": test_form or TestForm(),
        "preview": preview,
    }
    return render_settings(request, "frontend/console/settings/redaction.html", context, status)


@require_http_methods(["GET", "POST"])
@tenant_view
@roles.requires(roles.CHANGE_SETTINGS)
def redaction_policy(request, tenant_slug):
    if request.method == "GET":
        return _page(request)
    form = PolicyForm(request.POST)
    policy = submit(request, form, services.redaction_policy_update, explain=_line_numbers)
    if form.errors:
        return _page(request, form=form, status=400)
    return saved(
        request, f"Saved as version {policy.version}: new spans use it.", "settings-redaction"
    )


@require_POST
@tenant_view
@roles.requires(roles.READ)  # trying a text changes nothing
def redaction_test(request, tenant_slug):
    form = TestForm(request.POST)
    preview, status = None, 400
    if form.is_valid():
        redacted, counts = selectors.redaction_preview(
            tenant_id=request.tenant.pk, text=form.cleaned_data["text"]
        )
        preview, status = {"text": redacted, "counts": sorted(counts.items())}, 200
    if is_partial(request):
        context = {"test_form": form, "preview": preview}
        return render_settings(
            request, "frontend/console/settings/_redaction_test.html", context, status
        )
    return _page(request, test_form=form, preview=preview, status=status)


urlpatterns = [
    path("", redaction_policy, name="settings-redaction"),
    path("test", redaction_test, name="settings-redaction-test"),
]
