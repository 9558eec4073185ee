from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from controlplane import api, views
from tracing import api as tracing_api
from tracing import api_read
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
    path("api/v1/traces", api_read.TraceListView.as_view(), name="traces"),
    path("api/v1/traces/<str:trace_id>", api_read.TraceDetailView.as_view(), name="trace"),
    path("api/v1/spans/<str:span_id>", api_read.SpanDetailView.as_view(), name="span"),
    path("api/v1/sessions", api_read.SessionListView.as_view(), name="sessions"),
    path("api/v1/sessions/<path:session_id>", api_read.SessionDetailView.as_view(), name="session"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]

handler404 = views.not_found
handler500 = views.server_error
