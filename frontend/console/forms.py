"""The runs and agents pages' forms: they parse what a person typed; execution's services
check it against the agent (its manifest, the platform's maxima), as they do for the API."""

import json
import math

from django import forms

from execution.api import json_value_problem
from execution.bundles import LIMIT_KEYS

LIMITS = sorted(LIMIT_KEYS)


class AgentForm(forms.Form):
    name = forms.SlugField(
        max_length=100, help_text="Letters, digits, - and _: the name runs refer to."
    )
    description = forms.CharField(max_length=500, required=False)


class BundleForm(forms.Form):
    bundle = forms.FileField(
        help_text="A .tar.gz or .zip with flightdeck.toml at its root.",
        error_messages={"required": "Choose a bundle (.tar.gz or .zip) to upload."},
    )


def _number(raw: str, name: str):
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise forms.ValidationError(f"{name} must be a number, not {raw!r}")
    return value


class RunStartForm(forms.Form):
    """Agent (and version), input as JSON, and optional overrides of the run's limits."""

    agent = forms.ChoiceField(error_messages={"required": "Pick an agent to run."})
    version = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    input = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="JSON, passed to main(ctx, input); empty means null.",
    )

    def __init__(self, *args, agents, versions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = [("", "Choose…")] + [(a, a) for a in agents]
        self.fields["version"].choices = [("", "latest")] + [(v, f"v{v}") for v in versions]
        for key in LIMITS:
            self.fields[key] = forms.CharField(required=False, label=key)

    def clean_input(self):
        raw = self.cleaned_data["input"]
        if not raw.strip():
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"The input is not valid JSON: {exc}") from None
        except RecursionError:
            raise forms.ValidationError("The input is nested too deeply.") from None
        # What the API refuses in an input (too deep to replay, NUL that jsonb cannot hold).
        problem = json_value_problem(value)
        if problem:
            raise forms.ValidationError(f"The input {problem}.")
        return value

    def clean(self):
        cleaned = super().clean()
        limits = {}
        for key in LIMITS:
            raw = (cleaned.get(key) or "").strip()
            if not raw:
                continue
            try:
                limits[key] = _number(raw, key)
            except forms.ValidationError as exc:
                self.add_error(key, exc)
        cleaned["limits"] = limits
        return cleaned

    def limit_fields(self):
        return [self[key] for key in LIMITS]
