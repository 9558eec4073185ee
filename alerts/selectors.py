"""Alerts' reads."""

from datetime import datetime

from django.db.models import Count
from django.utils.dateparse import parse_datetime

from alerts.models import Alert, AlertRule, AlertState, Delivery, Detector, WebhookEndpoint
from alerts.services import FieldError


def alert_rule_list():
    return AlertRule.objects.prefetch_related("endpoints").order_by("id")


def alert_rule_get(*, rule_id: int) -> AlertRule | None:
    return AlertRule.objects.prefetch_related("endpoints").filter(pk=rule_id).first()


def webhook_endpoint_list():
    return WebhookEndpoint.objects.order_by("id")


def webhook_endpoint_get(*, endpoint_id: int) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(pk=endpoint_id).first()


def alert_get(*, alert_id: int) -> Alert | None:
    return Alert.objects.filter(pk=alert_id).first()


def alert_list(*, filters) -> list[Alert]:
    """Newest first; filters: state, detector, agent, trace, run, since (ISO 8601)."""
    rows = Alert.objects.select_related("acknowledged_by", "resolved_by").order_by(
        "-created_at", "-id"
    )
    state = filters.get("state")
    if state:
        if state not in AlertState.values:
            raise FieldError("state", f"must be one of {', '.join(AlertState.values)}")
        rows = rows.filter(state=state)
    detector = filters.get("detector")
    if detector:
        if detector not in Detector.values:
            raise FieldError("detector", f"must be one of {', '.join(Detector.values)}")
        rows = rows.filter(detector=detector)
    if filters.get("agent"):
        rows = rows.filter(agent=filters["agent"])
    if filters.get("trace"):
        rows = rows.filter(trace_id=filters["trace"].lower())
    if filters.get("run"):
        rows = rows.filter(run_id=filters["run"])
    since = filters.get("since")
    if since:
        when = _datetime(since)
        if when is None:
            raise FieldError("since", "must be an ISO 8601 date-time, e.g. 2026-12-01T10:00:00Z")
        rows = rows.filter(created_at__gte=when)
    return list(rows[:500])


def _datetime(text: str) -> datetime | None:
    try:
        return parse_datetime(text)
    except ValueError:
        return None


def delivery_list(*, alert: Alert | None = None, endpoint: WebhookEndpoint | None = None):
    """Delivery attempts, newest first, of one alert or to one endpoint (the last 500)."""
    rows = Delivery.objects.order_by("-created_at", "-id")
    if alert is not None:
        rows = rows.filter(alert=alert)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    return list(rows[:500])


def alert_agents() -> list[str]:
    """The agents alerts name, for the alerts page's filter."""
    return list(
        Alert.objects.exclude(agent="").order_by("agent").values_list("agent", flat=True).distinct()
    )


def alerted_traces(*, trace_ids: list[str]) -> dict[str, int]:
    """How many alerts each of these traces (hex) raised, for the badges of a page of
    traces: one query for the page; a trace without alerts is absent."""
    rows = (
        Alert.objects.filter(trace_id__in=trace_ids)
        .values_list("trace_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return dict(rows)


def alerted_runs(*, run_ids: list) -> dict[str, int]:
    """How many alerts each of these managed runs raised, by run id as text."""
    rows = (
        Alert.objects.filter(run_id__in=[str(r) for r in run_ids])
        .values_list("run_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return dict(rows)
