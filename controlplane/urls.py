from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from controlplane import api, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/health", api.HealthView.as_view(), name="health"),
    path("api/v1/tenant", api.TenantView.as_view(), name="tenant"),
    path("api/v1/api-keys", api.ApiKeyListView.as_view(), name="api-keys"),
    path(
        "api/v1/api-keys/<int:key_id>/revoke", api.ApiKeyRevokeView.as_view(), name="api-key-revoke"
    ),
    path("api/v1/audit", api.AuditEventListView.as_view(), name="audit"),
    path("", include("execution.urls")),
    path("", include("replay.urls")),
    path("", include("tracing.urls")),
    path("", include("billing.urls")),
    path("", include("alerts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # Any other path under /api/ or /v1/ is a JSON 404, with DEBUG on too (Django's
    # debug 404 page is HTML and lists every URL pattern).
    re_path(r"^(?:api|v1)/", views.api_not_found),
    path("", include("frontend.urls")),
]

handler404 = views.not_found
handler500 = views.server_error
