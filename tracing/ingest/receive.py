"""What OTLP/HTTP and OTLP/gRPC share: the key check, the tenant's rate, and the
mapping of failures to answers an exporter understands (retry or give up)."""

import logging
from contextlib import contextmanager

import redis
from django.conf import settings
from django.db import DatabaseError, DataError, InterfaceError, OperationalError

from controlplane import ratelimit, services, throttle
from controlplane.auth import bearer_token
from controlplane.blobstore import BlobStoreUnavailable
from controlplane.models import ApiKey, Scope
from tracing.ingest.payloads import PayloadsSwept
from tracing.ingest.pipeline import IngestResult, spans_ingest

logger = logging.getLogger(__name__)

RETRY_AFTER_UNAVAILABLE = 5


class IngestRefused(Exception):
    """The request is refused as a whole. `status` is the HTTP status to answer."""

    GRPC_CODES = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        413: "RESOURCE_EXHAUSTED",
        415: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
        503: "UNAVAILABLE",
    }

    def __init__(self, status: int, error: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.retry_after = retry_after

    @property
    def grpc_code(self) -> str:
        return self.GRPC_CODES[self.status]


STORAGE_ERRORS = (
    OperationalError,
    InterfaceError,
    DatabaseError,
    BlobStoreUnavailable,
    PayloadsSwept,  # twice in a row: retention is busy removing the tenant's payloads
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@contextmanager
def storage_guard():
    """A database, blob store or Redis outage answers 503 with Retry-After. Nothing was
    committed, so the exporter keeps the batch and sends it again."""
    try:
        yield
    except DataError as exc:
        # A value the database cannot hold is the request's fault: a 503 would have the
        # exporter send the same batch again forever. Values are checked span by span
        # before this; this is the net under those checks.
        logger.warning("ingest refused a value: %s", exc)
        raise IngestRefused(400, "invalid", f"a value is out of range: {exc}") from exc
    except STORAGE_ERRORS as exc:
        logger.warning("ingest unavailable: %s: %s", type(exc).__name__, exc)
        raise IngestRefused(
            503,
            "unavailable",
            "storage is unavailable, retry later",
            retry_after=RETRY_AFTER_UNAVAILABLE,
        ) from exc


def ingest_key(authorization: str | None, *, address: str) -> ApiKey:
    token = bearer_token(authorization)
    if token is None:
        raise IngestRefused(
            401, "not_authenticated", "send an API key as 'Authorization: Bearer <key>'"
        )
    attempt = throttle.api_key_attempt(address, token)
    with storage_guard():
        try:
            key = services.api_key_authenticate(raw_key=token, before_read=attempt.check)
        except throttle.Throttled as exc:
            raise IngestRefused(429, "throttled", str(exc), retry_after=exc.retry_after) from None
        if key is None:
            attempt.failed()
    if key is None:
        raise IngestRefused(401, "authentication_failed", "unknown or revoked API key")
    if Scope.INGEST not in key.scopes and Scope.ADMIN not in key.scopes:
        raise IngestRefused(403, "permission_denied", "this key lacks the 'ingest' scope")
    return key


def span_count(request) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def log_record_count(request) -> int:
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def data_point_count(request) -> int:
    from tracing.codingagents.metrics import point_count

    return point_count(request)


def _admit(tenant, items: int, unit: str) -> None:
    """The tenant's ingest rate, one bucket for spans, log records and data points
    (`unit` names what this request counted, for the 429's detail)."""
    rate = tenant.ingest_spans_per_second or settings.INGEST_SPANS_PER_SECOND
    with storage_guard():
        # shared=False: without Redis, each web process keeps its own bucket rather
        # than writing one to the database on every batch.
        decision = ratelimit.take(
            f"ingest:{tenant.pk}", items, rate=rate, burst=2 * rate, shared=False
        )
    if not decision.allowed:
        raise IngestRefused(
            429,
            "rate_limited",
            f"over this tenant's ingest rate of {rate} {unit} a second "
            "(spans, log records and metric data points count against one rate)",
            retry_after=max(1, round(decision.retry_after + 0.5)),
        )


def receive(*, key: ApiKey, request) -> IngestResult:
    tenant = key.tenant
    _admit(tenant, span_count(request), "spans")
    with storage_guard():
        return spans_ingest(tenant_id=tenant.pk, request=request)


def receive_logs(*, key: ApiKey, request) -> IngestResult:
    """Coding agents' events (OTLP log records), folded into spans on the span path."""
    from tracing.codingagents.fold import log_records_ingest

    tenant = key.tenant
    _admit(tenant, log_record_count(request), "log records")
    with storage_guard():
        return log_records_ingest(tenant_id=tenant.pk, request=request)


def receive_metrics(*, key: ApiKey, request) -> IngestResult:
    from tracing.codingagents.metrics import metric_points_ingest

    tenant = key.tenant
    _admit(tenant, data_point_count(request), "metric data points")
    with storage_guard():
        return metric_points_ingest(tenant_id=tenant.pk, request=request)
