from django.shortcuts import redirect
from django.urls import include, path
from django.views.decorators.http import require_GET

from frontend.console.settings.pages import PAGES
from frontend.decorators import tenant_view


@require_GET
@tenant_view
def settings_home(request, tenant_slug):
    return redirect(PAGES[0].url_name, tenant_slug=tenant_slug)


urlpatterns = [
    path("", settings_home, name="settings"),
    *[path(f"{page.slug}/", include(page.module)) for page in PAGES],
]
