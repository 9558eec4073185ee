"""OTLP metrics to MetricPoint rows: sums, gauges and histograms, per tenant.

On PostgreSQL the table is partitioned by day; the beat job `tracing.metric_partitions`
creates today's and the next days' partitions ahead and drops those older than
METRICS_RETENTION_DAYS (on SQLite it deletes old rows in bounded batches). A day's
partition is also created the first time a point of that day arrives, should the beat
be late (under an advisory lock, so two processes do not race to create it). Points are stored once
per (series, time), so a resent batch changes nothing. Attribute values are redacted
with the tenant's rules like every span attribute.
"""

import hashlib
import math
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from controlplane.tenancy import tenant_scope
from tracing.codingagents.mapping import METRIC_COLUMNS
from tracing.codingagents.models import MetricKind
from tracing.ingest import rows
from tracing.ingest.normalise import MAX_NS, attributes
from tracing.ingest.pipeline import IngestResult
from tracing.ingest.policy import tenant_redaction

# Points further from now than METRICS_RETENTION_DAYS back or this ahead are refused:
# each day costs a partition, and an older point would land in a dropped one.
FUTURE_DAYS = 2
PARTITION_LOCK = 0x4D50  # pg_advisory_xact_lock class of partition creation and drops
PARTITION_PREFIX = "tracing_metricpoint_p"
# Rows deleted per statement on SQLite: each batch is one short write turn, so ingest
# is not held up behind a long delete.
DELETE_BATCH = 5000

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
    past = settings.METRICS_RETENTION_DAYS
    if not now - timedelta(days=past) <= moment <= now + timedelta(days=FUTURE_DAYS):
        return (
            f"data point of {name!r}: time is more than {past} days before or "
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
                    f"CREATE TABLE IF NOT EXISTS {PARTITION_PREFIX}{day:%Y%m%d} "
                    f"PARTITION OF tracing_metricpoint FOR VALUES FROM "
                    f"('{day.isoformat()} 00:00:00+00') TO "
                    f"('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
                )
        with self.lock:
            self.days.update(missing)

    def forget(self, days: set[date]) -> None:
        with self.lock:
            self.days -= days


partitions = _Partitions()


def partition_days() -> list[date]:
    """The days whose partition exists (PostgreSQL), oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'tracing_metricpoint'"
        )
        names = [row[0] for row in cursor.fetchall()]
    days = []
    for name in names:
        try:
            days.append(datetime.strptime(name.removeprefix(PARTITION_PREFIX), "%Y%m%d").date())
        except ValueError:
            continue  # not one of ours (an operator's default partition): left alone
    return sorted(days)


@dataclass(slots=True)
class Maintained:
    created: list[date]
    dropped: list[date]
    deleted_rows: int


def metric_partitions_maintain(*, today: date | None = None) -> Maintained:
    """Keep the metric store's days: on PostgreSQL create the partitions of today and
    the next FUTURE_DAYS ahead (the days a point may have) and drop those wholly older
    than METRICS_RETENTION_DAYS; on SQLite delete the older rows, DELETE_BATCH at a
    time. Every tenant's points alike: the retention is the platform's. Safe to run
    twice."""
    today = today or timezone.now().date()
    oldest_kept = today - timedelta(days=settings.METRICS_RETENTION_DAYS)
    if connection.vendor != "postgresql":
        return Maintained(created=[], dropped=[], deleted_rows=_rows_delete_before(oldest_kept))
    wanted = {today + timedelta(days=i) for i in range(FUTURE_DAYS + 1)}
    existing = set(partition_days())
    created = sorted(wanted - existing)
    partitions.ensure(set(created))
    dropped = [d for d in sorted(existing) if d < oldest_kept]
    for day in dropped:
        # One partition a transaction: a drop takes an exclusive lock on the parent
        # for its moment only, not for the whole list.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [PARTITION_LOCK])
            cursor.execute(f"DROP TABLE IF EXISTS {PARTITION_PREFIX}{day:%Y%m%d}")
    partitions.forget(set(dropped))
    return Maintained(created=created, dropped=dropped, deleted_rows=0)


def _rows_delete_before(day: date) -> int:
    cutoff = connection.ops.adapt_datetimefield_value(
        datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    )
    deleted = 0
    while True:
        # Oldest ids first: points arrive roughly in time order, so the rows due are
        # found at the start of the table without an index on time alone.
        with rows.write_turn(), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM tracing_metricpoint WHERE id IN (SELECT id FROM "
                "tracing_metricpoint WHERE time < %s ORDER BY id LIMIT %s)",
                [cutoff, DELETE_BATCH],
            )
            count = cursor.rowcount
        deleted += count
        if count < DELETE_BATCH:
            return deleted


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
