"""The metric store's days: beat makes the partitions of today and the next days ahead
and drops those older than METRICS_RETENTION_DAYS on PostgreSQL; on SQLite it deletes
the older rows in bounded batches. Points older than the retention are refused."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tracing.codingagents import metrics
from tracing.codingagents.models import MetricPoint
from tracing.ingest.decode import decode_request
from tracing.tasks import metric_partitions

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def known_partitions():
    """The process's list of made partitions, emptied: a test's DDL is rolled back."""
    metrics.partitions.days.clear()
    yield
    metrics.partitions.days.clear()


def _point(tenant, day, value=1.0):
    moment = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    return MetricPoint.all_tenants.create(
        tenant=tenant, time=moment, series=hashlib.blake2b(repr(value).encode(), digest_size=16).digest(), name="m", kind=1,
        value=value,
    )  # fmt: skip


@pytest.mark.postgres
def test_it_makes_partitions_ahead_and_drops_the_old_ones(acme, settings):
    settings.METRICS_RETENTION_DAYS = 10
    today = timezone.now().date()
    old = [today - timedelta(days=d) for d in (12, 11, 10, 3)]
    metrics.partitions.ensure(set(old))
    for i, day in enumerate(old):
        _point(acme, day, float(i))
    with connection.cursor() as cursor:
        # The test's rows are not committed: their deferred foreign-key checks would
        # keep a partition from being dropped, as a committed row's do not.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    done = metrics.metric_partitions_maintain(today=today)
    ahead = [today + timedelta(days=d) for d in range(metrics.FUTURE_DAYS + 1)]
    assert done.created == ahead
    assert done.dropped == old[:2]
    assert metrics.partition_days() == [old[2], old[3], *ahead]
    # The oldest kept day is the retention's first: points of it may still arrive.
    assert sorted(MetricPoint.all_tenants.values_list("value", flat=True)) == [2.0, 3.0]
    again = metrics.metric_partitions_maintain(today=today)
    assert (again.created, again.dropped) == ([], [])
    # A point of a day made ahead goes in without the ingest path making it.
    assert metrics.partitions.days >= set(ahead)
    _point(acme, ahead[-1], 9.0)


@pytest.mark.postgres
def test_the_beat_job_maintains_them(acme, settings):
    metric_partitions()  # called directly: runs, unclaimed
    today = timezone.now().date()
    assert set(metrics.partition_days()) >= {today, today + timedelta(days=1)}


def test_on_sqlite_it_deletes_old_rows_in_bounded_batches(acme, settings, monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL drops partitions instead")
    settings.METRICS_RETENTION_DAYS = 5
    monkeypatch.setattr(metrics, "DELETE_BATCH", 3)
    today = timezone.now().date()
    for i in range(7):
        _point(acme, today - timedelta(days=6), float(i))  # one day past the retention
    _point(acme, today - timedelta(days=5), 100.0)
    _point(acme, today, 101.0)
    with CaptureQueriesContext(connection) as queries:
        done = metrics.metric_partitions_maintain(today=today)
    assert done.deleted_rows == 7 and not done.created and not done.dropped
    deletes = [q for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 3 + 3 + 1 rows
    assert sorted(MetricPoint.all_tenants.values_list("value", flat=True)) == [100.0, 101.0]
    assert metrics.metric_partitions_maintain(today=today).deleted_rows == 0


def test_a_point_older_than_the_retention_is_refused(acme, settings):
    settings.METRICS_RETENTION_DAYS = 3
    now = timezone.now()
    doc = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "claude_code.cost.usage",
                                "gauge": {
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": str(int(t.timestamp() * 1e9)),
                                            "asDouble": 1.0,
                                        }
                                        for t in (now - timedelta(days=4), now)
                                    ]
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    request = decode_request(
        json.dumps(doc).encode(), "application/json", ExportMetricsServiceRequest
    )
    result = metrics.metric_points_ingest(tenant_id=acme.id, request=request)
    assert (result.accepted, result.rejected) == (1, 1)
    assert "3 days before" in " ".join(result.errors)
