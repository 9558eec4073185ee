from django.urls import path

from tracing import api, api_read, views
from tracing.codingagents import api as codingagents_api
from tracing.retention import api as retention_api

urlpatterns = [
    path("v1/traces", views.otlp_traces, name="otlp-traces"),
    path("v1/logs", views.otlp_logs, name="otlp-logs"),
    path("v1/metrics", views.otlp_metrics, name="otlp-metrics"),
    path("api/v1/metrics", codingagents_api.MetricsView.as_view(), name="metrics"),
    path("api/v1/redaction-policy", api.RedactionPolicyView.as_view(), name="redaction-policy"),
    path("api/v1/retention", retention_api.RetentionView.as_view(), name="retention"),
    path("api/v1/storage", retention_api.StorageView.as_view(), name="storage"),
    path("api/v1/legal-holds", retention_api.LegalHoldListView.as_view(), name="legal-holds"),
    path(
        "api/v1/legal-holds/<int:hold_id>",
        retention_api.LegalHoldView.as_view(),
        name="legal-hold",
    ),
    path(
        "api/v1/erasure-requests",
        retention_api.ErasureListView.as_view(),
        name="erasure-requests",
    ),
    path(
        "api/v1/erasure-requests/<int:request_id>",
        retention_api.ErasureView.as_view(),
        name="erasure-request",
    ),
    path("api/v1/traces", api_read.TraceListView.as_view(), name="traces"),
    path("api/v1/traces/<str:trace_id>", api_read.TraceDetailView.as_view(), name="trace"),
    path(
        "api/v1/traces/<str:trace_id>/mark",
        retention_api.TraceMarkView.as_view(),
        name="trace-mark",
    ),
    path("api/v1/spans/<str:span_id>", api_read.SpanDetailView.as_view(), name="span"),
    path("api/v1/sessions", api_read.SessionListView.as_view(), name="sessions"),
    path(
        "api/v1/sessions/<path:session_id>/messages",
        api_read.SessionMessagesView.as_view(),
        name="session-messages",
    ),
    path("api/v1/sessions/<path:session_id>", api_read.SessionDetailView.as_view(), name="session"),
]
