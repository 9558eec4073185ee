from django.urls import path

from alerts import api

urlpatterns = [
    path("api/v1/alert-rules", api.AlertRuleListView.as_view(), name="alert-rules"),
    path("api/v1/alert-rules/<int:rule_id>", api.AlertRuleDetailView.as_view(), name="alert-rule"),
    path("api/v1/alerts", api.AlertListView.as_view(), name="alerts"),
    path(
        "api/v1/alerts/<int:alert_id>/acknowledge",
        api.AlertAcknowledgeView.as_view(),
        name="alert-acknowledge",
    ),
    path(
        "api/v1/alerts/<int:alert_id>/deliveries",
        api.AlertDeliveriesView.as_view(),
        name="alert-deliveries",
    ),
    path(
        "api/v1/alerts/<int:alert_id>/resolve", api.AlertResolveView.as_view(), name="alert-resolve"
    ),
    path(
        "api/v1/webhook-endpoints", api.WebhookEndpointListView.as_view(), name="webhook-endpoints"
    ),
    path(
        "api/v1/webhook-endpoints/<int:endpoint_id>",
        api.WebhookEndpointDetailView.as_view(),
        name="webhook-endpoint",
    ),
    path(
        "api/v1/webhook-endpoints/<int:endpoint_id>/test",
        api.WebhookEndpointTestView.as_view(),
        name="webhook-endpoint-test",
    ),
    path(
        "api/v1/webhook-endpoints/<int:endpoint_id>/deliveries",
        api.WebhookEndpointDeliveriesView.as_view(),
        name="webhook-endpoint-deliveries",
    ),
]
