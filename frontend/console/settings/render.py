"""A settings page: the console frame plus the settings sub-navigation."""

from frontend.console.settings.pages import PAGES
from frontend.render import render_page, section


def render_settings(request, template, context, status=200):
    parts = request.path.strip("/").split("/")
    current = parts[3] if section(request) == "settings" and len(parts) > 3 else ""
    context = {"settings_pages": PAGES, "settings_current": current, **context}
    return render_page(request, template, context, status=status)
