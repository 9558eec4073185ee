"""Alerts' writes: rules, endpoints, incidents and their states, delivery attempts."""

import base64
import logging
import secrets
from datetime import timedelta
from functools import partial
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from alerts.detectors import Finding
from alerts.models import (
    Alert,
    AlertRule,
    AlertState,
    Delivery,
    Detector,
    EndpointFormat,
    ErrorWindow,
    TraceWatch,
    WebhookEndpoint,
)
from controlplane.models import Tenant
from controlplane.services import Actor, ServiceError, audit_record

log = logging.getLogger(__name__)

# A rule's threshold when it names none: repeats (loop), error rate (error_burst),
# times the median (cost_spike), seconds without a step (stuck_run), the fraction of
# the cap (budget: every threshold billing announces).
DEFAULT_THRESHOLDS = {
    Detector.LOOP: 3,
    Detector.HALLUCINATED_TOOL: 1,
    Detector.BUDGET: 0,
    Detector.ERROR_BURST: 0.5,
    Detector.STUCK_RUN: 300,
    Detector.COST_SPIKE: 5,
}
STOP_REASONS = {Detector.LOOP: "loop", Detector.BUDGET: "budget"}  # others: "alert"


class FieldError(ServiceError):
    """Bad input; `field` names where."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def rule_threshold(rule: AlertRule) -> float:
    return DEFAULT_THRESHOLDS[rule.detector] if rule.threshold is None else rule.threshold


# --- rules and endpoints -------------------------------------------------------------------


def _rule_fields(data, *, partial_update: bool) -> dict:
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    fields = {}
    if "detector" in data or not partial_update:
        if data.get("detector") not in Detector.values:
            raise FieldError("detector", f"must be one of {', '.join(Detector.values)}")
        fields["detector"] = data["detector"]
    if "agent" in data:
        agent = data["agent"] or ""
        if not isinstance(agent, str) or len(agent) > 255:
            raise FieldError("agent", "must be an agent's name (up to 255 characters)")
        fields["agent"] = agent
    if "threshold" in data:
        threshold = data["threshold"]
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0
        ):
            raise FieldError("threshold", "must be a number >= 0, or null for the default")
        fields["threshold"] = threshold
    if "stop_run" in data:
        if not isinstance(data["stop_run"], bool):
            raise FieldError("stop_run", "must be true or false")
        fields["stop_run"] = data["stop_run"]
    if "endpoints" in data:
        ids = data["endpoints"]
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise FieldError("endpoints", "must be a list of webhook endpoint ids")
        found = list(WebhookEndpoint.objects.filter(pk__in=ids))
        missing = sorted(set(ids) - {e.pk for e in found})
        if missing:
            raise FieldError("endpoints", f"no webhook endpoint {missing[0]}")
        fields["endpoints"] = found
    return fields


@transaction.atomic
def alert_rule_create(*, tenant: Tenant, data, actor: Actor) -> AlertRule:
    fields = _rule_fields(data, partial_update=False)
    endpoints = fields.pop("endpoints", [])
    rule = AlertRule.objects.create(tenant=tenant, **fields)
    rule.endpoints.set(endpoints)
    audit_record(tenant=tenant, actor=actor, action="alert_rule.create", target=rule)
    return rule


@transaction.atomic
def alert_rule_update(*, rule: AlertRule, data, actor: Actor) -> AlertRule:
    fields = _rule_fields(data, partial_update=True)
    endpoints = fields.pop("endpoints", None)
    for name, value in fields.items():
        setattr(rule, name, value)
    rule.save()
    if endpoints is not None:
        rule.endpoints.set(endpoints)
    audit_record(tenant=rule.tenant, actor=actor, action="alert_rule.update", target=rule)
    return rule


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, actor: Actor) -> None:
    audit_record(tenant=rule.tenant, actor=actor, action="alert_rule.delete", target=rule)
    rule.delete()


def _url_problem(url) -> str | None:
    if not isinstance(url, str) or not url or len(url) > 2000:
        return "is required: an http(s) URL or mailto:address"
    if url.startswith("mailto:"):
        return None if "@" in url[7:] else "mailto: needs an e-mail address"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL or mailto:address"
    return _egress_problem(url)


def _egress_problem(url: str) -> str | None:
    """The tools' egress rule: private and loopback addresses only where the operator
    lists them, the platform's own listeners never (checked again at each delivery)."""
    from execution.retry import UpstreamError
    from execution.tools.egress import checked_addresses

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        checked_addresses(parts.hostname, port)
    except ValueError:
        return "has a bad port"
    except UpstreamError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a name that does not resolve (yet): each
        return None  # delivery checks again and logs why it failed
    return None


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@transaction.atomic
def webhook_endpoint_create(*, tenant: Tenant, data, actor: Actor) -> WebhookEndpoint:
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    problem = _url_problem(data.get("url"))
    if problem:
        raise FieldError("url", problem)
    fmt = data.get("format", EndpointFormat.STANDARD)
    if fmt not in EndpointFormat.values:
        raise FieldError("format", f"must be one of {', '.join(EndpointFormat.values)}")
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url=data["url"], format=fmt, secret=new_secret()
    )
    audit_record(tenant=tenant, actor=actor, action="webhook_endpoint.create", target=endpoint)
    return endpoint


@transaction.atomic
def webhook_endpoint_update(*, endpoint: WebhookEndpoint, data, actor: Actor) -> WebhookEndpoint:
    """Change the fields given (url, format); the secret stays as it was."""
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    unknown = sorted(set(data) - {"url", "format"})
    if unknown:
        raise FieldError(unknown[0], "is not a field of a webhook endpoint (url, format)")
    if "url" in data:
        problem = _url_problem(data["url"])
        if problem:
            raise FieldError("url", problem)
        endpoint.url = data["url"]
    if "format" in data:
        if data["format"] not in EndpointFormat.values:
            raise FieldError("format", f"must be one of {', '.join(EndpointFormat.values)}")
        endpoint.format = data["format"]
    endpoint.save(update_fields=["url", "format"])
    audit_record(
        tenant=endpoint.tenant, actor=actor, action="webhook_endpoint.update", target=endpoint
    )
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    audit_record(
        tenant=endpoint.tenant, actor=actor, action="webhook_endpoint.delete", target=endpoint
    )
    endpoint.delete()


# --- incidents -----------------------------------------------------------------------------


def findings_raise(
    *, rules, detector: str, finding: Finding, agent: str, trace_id: str, run_id: str,
    tool_subject: bool = False,
) -> int:  # fmt: skip
    """Raise the finding under every rule of its detector whose agent and threshold it
    meets; returns how many alerts were new."""
    raised = 0
    for rule in rules:
        if rule.detector != detector:
            continue
        if rule.agent and (tool_subject or rule.agent != agent):
            continue
        if finding.count < rule_threshold(rule) or finding.count == 0:
            continue
        raised += (
            alert_raise(rule=rule, finding=finding, agent=agent, trace_id=trace_id, run_id=run_id)
            is not None
        )
    return raised


def alert_raise(
    *, rule: AlertRule, finding: Finding, agent: str, trace_id: str, run_id: str
) -> Alert | None:
    """Open an incident for the finding's cause unless one is open already; then queue
    its deliveries and, when the rule says so, stop the run. None: not new."""
    if (
        Alert.objects.filter(rule=rule, cause=finding.cause)
        .exclude(state=AlertState.RESOLVED)
        .exists()
    ):
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                tenant_id=rule.tenant_id,
                rule=rule,
                detector=rule.detector,
                cause=finding.cause[:255],
                agent=agent[:255],
                trace_id=trace_id,
                span_id=finding.span_id,
                run_id=str(run_id or "")[:64],
                summary=finding.summary[:500],
                detail=finding.detail,
            )
    except IntegrityError:
        return None  # another worker opened it first
    for endpoint in rule.endpoints.all():
        transaction.on_commit(
            partial(
                _enqueue_delivery,
                tenant_id=rule.tenant_id,
                alert_id=alert.pk,
                endpoint_id=endpoint.pk,
            )
        )
    if rule.stop_run and alert.run_id.isdigit():
        from execution.services import run_stop_request

        run_stop_request(run_id=int(alert.run_id), reason=STOP_REASONS.get(rule.detector, "alert"))
    return alert


def _enqueue_delivery(*, tenant_id: int, alert_id: int | None, endpoint_id: int, test_id=""):
    from alerts.tasks import alert_deliver

    kwargs = {"tenant_id": tenant_id, "alert_id": alert_id, "endpoint_id": endpoint_id}
    try:
        alert_deliver.apply_async(
            kwargs={**kwargs, "test_id": test_id} if test_id else kwargs,
            queue=settings.ALERTS_QUEUE,
        )
    except Exception as exc:  # noqa: BLE001 - the alert is stored and listed either way
        log.error("could not queue delivery of alert %s: %r", alert_id, exc)


def _state_change(*, alert: Alert, to: str, by, actor: Actor, allowed: tuple) -> Alert:
    if alert.state not in allowed:
        raise FieldError("state", f"the alert is {alert.state}")
    now = timezone.now()
    alert.state = to
    if to == AlertState.ACKNOWLEDGED:
        alert.acknowledged_at, alert.acknowledged_by = now, by
    else:
        alert.resolved_at, alert.resolved_by = now, by
    alert.save()
    audit_record(tenant=alert.tenant, actor=actor, action=f"alert.{to}", target=alert)
    return alert


@transaction.atomic
def alert_acknowledge(*, alert: Alert, actor: Actor) -> Alert:
    return _state_change(
        alert=alert,
        to=AlertState.ACKNOWLEDGED,
        by=actor.user,
        actor=actor,
        allowed=(AlertState.OPEN,),
    )


@transaction.atomic
def alert_resolve(*, alert: Alert, actor: Actor) -> Alert:
    return _state_change(
        alert=alert,
        to=AlertState.RESOLVED,
        by=actor.user,
        actor=actor,
        allowed=(AlertState.OPEN, AlertState.ACKNOWLEDGED),
    )


def trace_watches_lock(*, tenant_id: int, trace_ids: list[str]) -> dict[str, TraceWatch]:
    """Each trace's watch by trace id, created where missing and locked until the
    caller's transaction ends, so two workers on one trace count in turn. One
    statement for the whole batch: an upsert that touches the rows that exist (which
    locks them, as FOR UPDATE would) and returns every row's state, taken in trace
    order (no deadlock between workers)."""
    trace_ids = sorted(set(trace_ids))
    if not trace_ids:
        return {}
    table = TraceWatch._meta.db_table
    now = timezone.now()
    stamp = _stamp(now)
    values = ", ".join(["(%s, %s, %s, %s)"] * len(trace_ids))
    sql = (
        f"INSERT INTO {table} (tenant_id, trace_id, state, updated_at) VALUES {values} "  # noqa: S608 - fixed names, values bound
        "ON CONFLICT (tenant_id, trace_id) DO UPDATE SET updated_at = excluded.updated_at "
        "RETURNING trace_id, state"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [v for t in trace_ids for v in (tenant_id, t, "{}", stamp)])
        rows = cursor.fetchall()
    return {
        trace_id: TraceWatch(
            tenant_id=tenant_id,
            trace_id=trace_id,
            state=orjson.loads(state) if isinstance(state, str | bytes) else state,
            updated_at=now,
        )
        for trace_id, state in rows
    }


def _stamp(when):
    """A datetime as the ORM would write updated_at (SQLite: naive UTC text), so the
    prune's comparison reads raw and ORM writes alike."""
    return TraceWatch._meta.get_field("updated_at").get_db_prep_value(when, connection)


def trace_watches_save(*, watches: list[TraceWatch]) -> None:
    """Write the locked watches back in one statement: an upsert on rows that exist,
    their state encoded by orjson (the ORM's bulk_update builds a CASE per row, and
    its JSONField encodes with the json module)."""
    if not watches:
        return
    table = TraceWatch._meta.db_table
    stamp = _stamp(timezone.now())
    values = ", ".join(["(%s, %s, %s, %s)"] * len(watches))
    sql = (
        f"INSERT INTO {table} (tenant_id, trace_id, state, updated_at) VALUES {values} "  # noqa: S608 - fixed names, values bound
        "ON CONFLICT (tenant_id, trace_id) DO UPDATE SET state = excluded.state, "
        "updated_at = excluded.updated_at"
    )
    params = [
        v for w in watches for v in (w.tenant_id, w.trace_id, orjson.dumps(w.state).decode(), stamp)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def error_windows_add(*, tenant_id: int, counts: dict[tuple[str, int], tuple[int, int]]):
    """Add calls and errors to each (subject, minute) window in one statement: an
    upsert that adds, which neither bulk_create nor update() can express, so another
    worker's counts for the same minute are summed, not overwritten."""
    if not counts:
        return
    table = ErrorWindow._meta.db_table
    rows = [(tenant_id, subject, minute, c, e) for (subject, minute), (c, e) in counts.items()]
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
    sql = (
        f"INSERT INTO {table} (tenant_id, subject, minute, calls, errors) VALUES {values} "  # noqa: S608 - fixed names, values bound
        "ON CONFLICT (tenant_id, subject, minute) DO UPDATE SET "
        f"calls = {table}.calls + excluded.calls, errors = {table}.errors + excluded.errors"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [v for row in rows for v in row])


def detection_state_prune(*, now=None) -> tuple[int, int]:
    """Every tenant's detection state past its use: trace watches idle for
    ALERTS_WATCH_IDLE_HOURS (a trace that wakes later starts counting again) and error
    windows older than ALERTS_ERROR_KEEP_MINUTES (late spans are judged on what is
    left). Returns (watches, windows) deleted."""
    now = now or timezone.now()
    idle = now - timedelta(hours=settings.ALERTS_WATCH_IDLE_HOURS)
    watches, _ = TraceWatch.objects.unscoped().filter(updated_at__lt=idle).delete()
    oldest = int(now.timestamp()) // 60 - settings.ALERTS_ERROR_KEEP_MINUTES
    windows, _ = ErrorWindow.objects.unscoped().filter(minute__lt=oldest).delete()
    return watches, windows


# --- delivery ------------------------------------------------------------------------------


def delivery_attempt(*, alert_id: int | None, endpoint_id: int, attempt: int, test_id: str = ""):
    """Send an alert (None with test_id: a test message) to an endpoint once, logging
    the attempt. An alert already delivered there is not sent again (a redelivered
    task). Raises DeliveryFailed for the task to retry."""
    from alerts import delivery

    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    alert = Alert.objects.filter(pk=alert_id).first() if alert_id else None
    if endpoint is None or (alert_id and alert is None):
        return  # deleted since
    message_id = test_id or f"msg_{alert_id}_{endpoint_id}"
    if Delivery.objects.filter(message_id=message_id, endpoint=endpoint, ok=True).exists():
        return
    try:
        status = delivery.send(
            endpoint=endpoint, message_id=message_id, message=delivery.payload(alert)
        )
    except delivery.DeliveryFailed as exc:
        Delivery.objects.create(
            tenant_id=endpoint.tenant_id, alert=alert, endpoint=endpoint, message_id=message_id,
            attempt=attempt, ok=False, status_code=exc.args[1] if len(exc.args) > 1 else None,
            error=str(exc.args[0])[:500],
        )  # fmt: skip
        raise
    Delivery.objects.create(
        tenant_id=endpoint.tenant_id, alert=alert, endpoint=endpoint, message_id=message_id,
        attempt=attempt, ok=True, status_code=status,
    )  # fmt: skip


@transaction.atomic
def webhook_endpoint_test(*, endpoint: WebhookEndpoint, actor: Actor) -> str:
    """Queue a test message to the endpoint; its webhook-id."""
    test_id = f"msg_test_{secrets.token_hex(8)}"
    audit_record(
        tenant=endpoint.tenant, actor=actor, action="webhook_endpoint.test", target=endpoint
    )
    transaction.on_commit(
        partial(_enqueue_delivery, tenant_id=endpoint.tenant_id, alert_id=None,
                endpoint_id=endpoint.pk, test_id=test_id)
    )  # fmt: skip
    return test_id
