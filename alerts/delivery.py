"""Delivering an alert: Standard Webhooks signing, Slack-compatible bodies, e-mail.

The signature is `v1,` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")), the
secret being the bytes after `whsec_` (base64). The webhook-id is the same on every
attempt of one alert to one endpoint, so a receiver that saw it already can drop it.
"""

import base64
import hashlib
import hmac
import time

import orjson
from django.conf import settings
from django.core.mail import send_mail

from alerts.models import Alert, WebhookEndpoint


class DeliveryFailed(Exception):
    """The endpoint did not take the message; the task retries with backoff."""


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(alert: Alert | None) -> dict:
    if alert is None:
        return {"type": "alert.test", "data": {"summary": "a test message from Flightdeck"}}
    return {
        "type": "alert.raised",
        "data": {
            "id": alert.pk,
            "detector": alert.detector,
            "state": alert.state,
            "summary": alert.summary,
            "agent": alert.agent,
            "trace_id": alert.trace_id,
            "span_id": alert.span_id,
            "run_id": alert.run_id,
            "detail": alert.detail,
            "created_at": alert.created_at.isoformat(),
        },
    }


def body_for(endpoint: WebhookEndpoint, message: dict) -> bytes:
    if endpoint.format == "slack":
        data = message["data"]
        where = f" (trace {data['trace_id']})" if data.get("trace_id") else ""
        text = f"[{data.get('detector', 'test')}] {data['summary']}{where}"
        return orjson.dumps({"text": text})
    return orjson.dumps(message)


def send(*, endpoint: WebhookEndpoint, message_id: str, message: dict) -> int | None:
    """Send once; the HTTP status (None for e-mail). Raises DeliveryFailed."""
    if endpoint.url.startswith("mailto:"):
        data = message["data"]
        try:
            send_mail(
                subject=f"Flightdeck alert: {data['summary']}"[:200],
                message=orjson.dumps(message, option=orjson.OPT_INDENT_2).decode(),
                from_email=None,
                recipient_list=[endpoint.url[7:]],
            )
        except Exception as exc:  # noqa: BLE001 - any mail error is a failed attempt
            raise DeliveryFailed(f"mail: {exc!r}"[:500]) from None
        return None
    from execution.tools.egress import egress_client

    body = body_for(endpoint, message)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(endpoint.secret, message_id, timestamp, body),
    }
    try:
        response = egress_client().post(
            endpoint.url, content=body, headers=headers, timeout=settings.ALERTS_WEBHOOK_TIMEOUT
        )
    except Exception as exc:  # noqa: BLE001 - refused by egress, refused, timed out
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:500]) from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"answered {response.status_code}", response.status_code)
    return response.status_code
