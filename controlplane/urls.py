from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from controlplane import api, views
from tracing import api as tracing_api
from tracing import views as tracing_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/traces", tracing_views.otlp_traces, name="otlp-traces"),
    path("api/v1/health", api.HealthView.as_view(), name="health"),
    path("api/v1/tenant", api.TenantView.as_view(), name="tenant"),
    path("api/v1/api-keys", api.ApiKeyListView.as_view(), name="api-keys"),
    path(
        "api/v1/api-keys/<int:key_id>/revoke", api.ApiKeyRevokeView.as_view(), name="api-key-revoke"
    ),
    path("api/v1/audit", api.AuditEventListView.as_view(), name="audit"),
    path("", include("execution.urls")),
    path(
        "api/v1/redaction-policy",
        tracing_api.RedactionPolicyView.as_view(),
        name="redaction-policy",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

handler404 = views.not_found
handler500 = views.server_error
