"""The settings pages, in the order of the sub-navigation.

A new settings page is one entry here and one module with its views and `urlpatterns`:
it gets `/t/<slug>/settings/<slug>/` and its link in the sub-navigation from this list.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SettingsPage:
    slug: str  # the URL segment under settings/
    title: str
    module: str  # dotted path of the module holding the page's urlpatterns
    url_name: str  # the page's own URL, which the sub-navigation links to


PAGES = [
    SettingsPage("members", "Members", "frontend.console.settings.members", "settings-members"),
    SettingsPage("keys", "API keys", "frontend.console.settings.keys", "settings-keys"),
    SettingsPage("audit", "Audit log", "frontend.console.settings.audit", "settings-audit"),
    SettingsPage(
        "redaction", "Redaction", "frontend.console.settings.redaction", "settings-redaction"
    ),
]
