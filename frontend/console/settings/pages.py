"""The settings pages, in the order of the sub-navigation.

A new settings page is one entry here and one module beside this file, named after
its slug (`allowed-hosts` → `allowed_hosts.py`), holding its views and `urlpatterns`
with the page itself named `settings-<slug>`. It gets `/t/<slug>/settings/<slug>/` and
its link in the sub-navigation from this list.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SettingsPage:
    slug: str  # the URL segment under settings/
    title: str

    @property
    def module(self) -> str:
        return f"frontend.console.settings.{self.slug.replace('-', '_')}"

    @property
    def url_name(self) -> str:
        return f"settings-{self.slug}"


PAGES = [
    SettingsPage("members", "Members"),
    SettingsPage("keys", "API keys"),
    SettingsPage("audit", "Audit log"),
    SettingsPage("redaction", "Redaction"),
    SettingsPage("tools", "Tools"),
    SettingsPage("credentials", "Credentials"),
    SettingsPage("allowed-hosts", "Allowed hosts"),
    SettingsPage("budgets", "Budgets"),
    SettingsPage("prices", "Prices"),
    SettingsPage("alert-rules", "Alert rules"),
    SettingsPage("webhook-endpoints", "Webhook endpoints"),
    SettingsPage("retention", "Retention"),
]
