"""OTLP metrics to MetricPoint rows: sums, gauges and histograms, per tenant.

On PostgreSQL the table is partitioned by day; a day's partition is created the first
time a point of that day arrives (under an advisory lock, so two processes do not race
to create it), and dropping old data is dropping partitions. Points are stored once
per (series, time), so a resent batch changes nothing. Attribute values are redacted
with the tenant's rules like every span attribute.
"""

import hashlib
import math
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from controlplane.tenancy import tenant_scope
from tracing.codingagents.mapping import METRIC_COLUMNS
from tracing.codingagents.models import MetricKind
from tracing.ingest import rows
from tracing.ingest.normalise import MAX_NS, attributes
from tracing.ingest.pipeline import IngestResult
from tracing.ingest.policy import tenant_redaction

# Points further from now than this are refused: each day costs a partition.
PAST_DAYS = 400
FUTURE_DAYS = 2
PARTITION_LOCK = 0x4D50  # pg_advisory_xact_lock class of partition creation

COLUMNS = (
    "tenant_id", "time", "series", "name", "kind", "cumulative", "start_ns", "value", "count",
    "unit", "service_name", "service_version", "user_id", "user_email", "organization_id",
    "terminal_type", "session_id", "model", "attributes", "buckets",
)  # fmt: skip
_LENGTHS = {"service_version": 64, "terminal_type": 64}
CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def point_count(request) -> int:
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                which = metric.WhichOneof("data")
                total += len(getattr(metric, which).data_points) if which else 1
    return total


@dataclass(slots=True)
class _Point:
    time_ns: int
    name: str
    kind: int
    cumulative: bool
    start_ns: int
    value: float
    count: int | None
    unit: str
    attrs: dict
    buckets: dict | None


def _problem(name: str, point, value: float | None) -> str | None:
    if not point.time_unix_nano:
        return f"data point of {name!r}: time_unix_nano is required"
    if point.time_unix_nano > MAX_NS or point.start_time_unix_nano > MAX_NS:
        return f"data point of {name!r}: time_unix_nano must be below 2^63 ({MAX_NS})"
    if value is not None and not math.isfinite(value):
        return f"data point of {name!r}: the value must be a finite number"
    now = timezone.now()
    moment = datetime.fromtimestamp(point.time_unix_nano / 1e9, tz=UTC)
    if not now - timedelta(days=PAST_DAYS) <= moment <= now + timedelta(days=FUTURE_DAYS):
        return (
            f"data point of {name!r}: time is more than {PAST_DAYS} days before or "
            f"{FUTURE_DAYS} days after now"
        )
    return None


def _points(request, result: IngestResult) -> list[tuple[_Point, dict]]:
    out = []
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                which = metric.WhichOneof("data")
                name = metric.name[:255]
                if not name:
                    for _ in range(point_count_of(metric)):
                        result.reject("metric: name is required")
                    continue
                if which not in ("sum", "gauge", "histogram"):
                    for _ in range(point_count_of(metric)):
                        result.reject(f"metric {name!r}: {which or 'no data'} is not stored")
                    continue
                data = getattr(metric, which)
                cumulative = which != "gauge" and data.aggregation_temporality == CUMULATIVE
                for point in data.data_points:
                    if point.flags & 1:  # no recorded value: a gap, nothing to store
                        result.accepted += 1
                        continue
                    if which == "histogram":
                        value = point.sum if point.HasField("sum") else 0.0
                        bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
                        if counts and len(counts) != len(bounds) + 1:
                            result.reject(
                                f"data point of {name!r}: bucket_counts must be one more than explicit_bounds"
                            )
                            continue
                        buckets = {"bounds": bounds, "counts": counts} if counts else None
                        count = point.count
                    else:
                        kind = point.WhichOneof("value")
                        value = float(point.as_int) if kind == "as_int" else point.as_double
                        buckets, count = None, None
                    problem = _problem(name, point, value)
                    if problem:
                        result.reject(problem)
                        continue
                    out.append(
                        (
                            _Point(
                                time_ns=point.time_unix_nano,
                                name=name,
                                kind={"sum": MetricKind.SUM, "gauge": MetricKind.GAUGE}.get(
                                    which, MetricKind.HISTOGRAM
                                ),
                                cumulative=cumulative,
                                start_ns=point.start_time_unix_nano,
                                value=value,
                                count=count,
                                unit=metric.unit[:32],
                                attrs=attributes(point.attributes),
                                buckets=buckets,
                            ),
                            resource,
                        )
                    )
    return out


def point_count_of(metric) -> int:
    which = metric.WhichOneof("data")
    return max(1, len(getattr(metric, which).data_points)) if which else 1


class _Partitions:
    """The days whose partition exists, as this process knows."""

    def __init__(self):
        self.days: set[date] = set()
        self.lock = threading.Lock()

    def ensure(self, days: set[date]) -> None:
        if connection.vendor != "postgresql":
            return
        with self.lock:
            missing = sorted(days - self.days)
        if not missing:
            return
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [PARTITION_LOCK])
            for day in missing:
                # Fixed names from a date: nothing of the request reaches this SQL.
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS tracing_metricpoint_p{day:%Y%m%d} "
                    f"PARTITION OF tracing_metricpoint FOR VALUES FROM "
                    f"('{day.isoformat()} 00:00:00+00') TO "
                    f"('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
                )
        with self.lock:
            self.days.update(missing)


partitions = _Partitions()


def _series(point: _Point, resource: dict) -> bytes:
    identity = repr((point.name, point.kind, point.unit, sorted(resource.items()),
                     sorted(point.attrs.items()), point.start_ns if point.cumulative else 0))  # fmt: skip
    return hashlib.blake2b(identity.encode(), digest_size=16).digest()


def metric_points_ingest(*, tenant_id: int, request) -> IngestResult:
    """Store an ExportMetricsServiceRequest's points for one tenant. Points that cannot
    be stored are refused one by one (partial success); database errors are raised
    unchanged, so the caller answers 503 and the exporter retries."""
    result = IngestResult()
    points = _points(request, result)
    if not points:
        return result
    setup = tenant_redaction(tenant_id)
    counts: Counter = Counter()

    def clean(key: str, value):
        if key in setup.never_scan_keys:
            return value
        return setup.redactor.redact_value(value, counts)

    adapt = connection.ops.adapt_datetimefield_value
    values = []
    for point, resource in points:
        column = {c: "" for c in set(METRIC_COLUMNS.values())}
        column["service_name"] = str(resource.get("service.name", ""))
        rest = {}
        for source in (resource, point.attrs):
            for key, value in source.items():
                if key in setup.drop_keys:
                    continue
                if key in METRIC_COLUMNS:
                    name = METRIC_COLUMNS[key]
                    column[name] = str(clean(key, str(value)))[: _LENGTHS.get(name, 255)]
                elif source is point.attrs:
                    rest[key] = clean(key, value)
        moment = datetime.fromtimestamp(point.time_ns / 1e9, tz=UTC)
        values.append(
            (
                tenant_id,
                adapt(moment),
                _series(point, resource),
                point.name,
                point.kind,
                point.cumulative,
                point.start_ns,
                point.value,
                point.count,
                point.unit,
                column["service_name"][:255],
                column["service_version"],
                column["user_id"],
                column["user_email"],
                column["organization_id"],
                column["terminal_type"],
                column["session_id"],
                column["model"],
                rows.json_param(rest),
                rows.json_param(point.buckets),
            )  # fmt: skip
        )
    days = {datetime.fromtimestamp(p.time_ns / 1e9, tz=UTC).date() for p, _ in points}
    with tenant_scope(tenant_id):
        partitions.ensure(days)
        with rows.write_turn(), transaction.atomic():
            rows.insert_ignoring_conflicts("tracing_metricpoint", COLUMNS, values)
    # A resent point is accepted: it is stored, once.
    result.accepted += len(values)
    return result
