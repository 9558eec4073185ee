"""The alerts REST API: rules, alerts and their states, webhook endpoints. Parse, call
a service or selector, render."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from alerts import selectors, services
from alerts.models import Alert, AlertRule, Delivery, WebhookEndpoint
from controlplane.api_base import TenantAPIView
from controlplane.models import Scope
from controlplane.parsers import JSONParser
from controlplane.services import ServiceError


def _call(fn, **kwargs):
    try:
        return fn(**kwargs)
    except ServiceError as exc:
        field = getattr(exc, "field", None)
        raise ValidationError({field: [str(exc)]} if field else [str(exc)]) from None


def rule_json(rule: AlertRule) -> dict:
    return {
        "id": rule.pk,
        "detector": rule.detector,
        "agent": rule.agent or None,
        "threshold": rule.threshold,
        "effective_threshold": services.rule_threshold(rule),
        "endpoints": sorted(e.pk for e in rule.endpoints.all()),
        "stop_run": rule.stop_run,
        "created_at": rule.created_at,
    }


def alert_json(alert: Alert) -> dict:
    return {
        "id": alert.pk,
        "rule": alert.rule_id,
        "detector": alert.detector,
        "state": alert.state,
        "summary": alert.summary,
        "agent": alert.agent or None,
        "trace_id": alert.trace_id or None,
        "span_id": alert.span_id or None,
        "run_id": alert.run_id or None,
        "detail": alert.detail,
        "created_at": alert.created_at,
        "acknowledged_at": alert.acknowledged_at,
        "acknowledged_by": alert.acknowledged_by.username if alert.acknowledged_by else None,
        "resolved_at": alert.resolved_at,
        "resolved_by": alert.resolved_by.username if alert.resolved_by else None,
    }


def endpoint_json(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict:
    out = {
        "id": endpoint.pk,
        "url": endpoint.url,
        "format": endpoint.format,
        "created_at": endpoint.created_at,
    }
    if secret:  # the create answer only
        out["secret"] = endpoint.secret
    return out


def delivery_json(delivery: Delivery) -> dict:
    return {
        "id": delivery.pk,
        "alert": delivery.alert_id,  # null: a test message
        "endpoint": delivery.endpoint_id,
        "webhook_id": delivery.message_id,
        "attempt": delivery.attempt,
        "status": "delivered" if delivery.ok else "failed",
        "status_code": delivery.status_code,
        "error": delivery.error or None,
        "created_at": delivery.created_at,
    }


class AlertRuleListView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "POST": Scope.ADMIN}

    @extend_schema(summary="The tenant's alert rules")
    def get(self, request):
        return Response([rule_json(r) for r in selectors.alert_rule_list()])

    @extend_schema(
        summary="Create an alert rule",
        description='{"detector": "loop"|"hallucinated_tool"|"budget"|"error_burst"|'
        '"stuck_run"|"cost_spike", "agent": optional, "threshold": optional, '
        '"endpoints": [ids], "stop_run": bool}',
    )
    def post(self, request):
        rule = _call(
            services.alert_rule_create, tenant=request.tenant, data=request.data, actor=self.actor
        )
        return Response(rule_json(rule), status=201)


class AlertRuleDetailView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "PUT": Scope.ADMIN, "DELETE": Scope.ADMIN}

    def _rule(self, rule_id: int) -> AlertRule:
        rule = selectors.alert_rule_get(rule_id=rule_id)
        if rule is None:
            raise NotFound(f"no alert rule {rule_id}")
        return rule

    @extend_schema(summary="One alert rule")
    def get(self, request, rule_id: int):
        return Response(rule_json(self._rule(rule_id)))

    @extend_schema(summary="Change an alert rule (the fields given)")
    def put(self, request, rule_id: int):
        rule = _call(
            services.alert_rule_update,
            rule=self._rule(rule_id),
            data=request.data,
            actor=self.actor,
        )
        return Response(rule_json(selectors.alert_rule_get(rule_id=rule.pk)))

    @extend_schema(summary="Delete an alert rule", responses={204: None})
    def delete(self, request, rule_id: int):
        services.alert_rule_delete(rule=self._rule(rule_id), actor=self.actor)
        return Response(status=204)


class AlertListView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(
        summary="Alerts, newest first; each names its trace and span",
        parameters=[
            OpenApiParameter("state", str, enum=["open", "acknowledged", "resolved"]),
            OpenApiParameter("detector", str),
            OpenApiParameter("agent", str),
            OpenApiParameter("trace", str, description="a trace id (32 hex digits)"),
            OpenApiParameter("run", str, description="a managed run's id"),
            OpenApiParameter("since", str, description="ISO 8601 date-time"),
        ],
    )
    def get(self, request):
        rows = _call(selectors.alert_list, filters=request.query_params)
        return Response([alert_json(a) for a in rows])


class AlertStateView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = Scope.WRITE
    service = None

    @extend_schema(summary="Change an alert's state", request=None)
    def post(self, request, alert_id: int):
        alert = selectors.alert_get(alert_id=alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return Response(alert_json(_call(type(self).service, alert=alert, actor=self.actor)))


class AlertDeliveriesView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(summary="The alert's delivery attempts, newest first")
    def get(self, request, alert_id: int):
        alert = selectors.alert_get(alert_id=alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return Response([delivery_json(d) for d in selectors.delivery_list(alert=alert)])


class AlertAcknowledgeView(AlertStateView):
    service = staticmethod(services.alert_acknowledge)


class AlertResolveView(AlertStateView):
    service = staticmethod(services.alert_resolve)


class WebhookEndpointListView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "POST": Scope.ADMIN}

    @extend_schema(summary="The tenant's webhook endpoints (secrets are not shown again)")
    def get(self, request):
        return Response([endpoint_json(e) for e in selectors.webhook_endpoint_list()])

    @extend_schema(
        summary="Add a webhook endpoint; the answer holds its signing secret, once",
        description='{"url": "https://..." or "mailto:address", "format": "standard"|"slack"}',
    )
    def post(self, request):
        endpoint = _call(
            services.webhook_endpoint_create,
            tenant=request.tenant,
            data=request.data,
            actor=self.actor,
        )
        return Response(endpoint_json(endpoint, secret=True), status=201)


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    endpoint = selectors.webhook_endpoint_get(endpoint_id=endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


class WebhookEndpointDetailView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "PUT": Scope.ADMIN, "DELETE": Scope.ADMIN}

    @extend_schema(summary="One webhook endpoint")
    def get(self, request, endpoint_id: int):
        return Response(endpoint_json(_endpoint(endpoint_id)))

    @extend_schema(
        summary="Change a webhook endpoint's url or format (the fields given)",
        description='{"url": "https://..." or "mailto:address", "format": "standard"|"slack"}; '
        "the URL obeys the egress rules; the secret does not change",
    )
    def put(self, request, endpoint_id: int):
        endpoint = _call(
            services.webhook_endpoint_update,
            endpoint=_endpoint(endpoint_id),
            data=request.data,
            actor=self.actor,
        )
        return Response(endpoint_json(endpoint))

    @extend_schema(summary="Delete a webhook endpoint", responses={204: None})
    def delete(self, request, endpoint_id: int):
        services.webhook_endpoint_delete(endpoint=_endpoint(endpoint_id), actor=self.actor)
        return Response(status=204)


class WebhookEndpointTestView(TenantAPIView):
    required_scope = Scope.ADMIN

    @extend_schema(summary="Send a test message to the endpoint", request=None)
    def post(self, request, endpoint_id: int):
        webhook_id = services.webhook_endpoint_test(
            endpoint=_endpoint(endpoint_id), actor=self.actor
        )
        return Response({"webhook_id": webhook_id}, 202)


class WebhookEndpointDeliveriesView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(summary="Delivery attempts to the endpoint, newest first (the last 500)")
    def get(self, request, endpoint_id: int):
        deliveries = selectors.delivery_list(endpoint=_endpoint(endpoint_id))
        return Response([delivery_json(d) for d in deliveries])
