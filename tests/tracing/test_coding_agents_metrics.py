"""Coding agents' metrics over OTLP, sent by the OpenTelemetry SDK's own metric exporters
(HTTP and gRPC) as Claude Code sends them: stored as time series per tenant."""

import json
import time

import httpx
import pytest
from django.db import connection
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)

from controlplane.tenancy import tenant_scope
from tests.tracing.codingagents import CLAUDE_CODE_METRICS, delta, fixture, send_metrics
from tracing.models import MetricKind, MetricPoint

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_stores_what_the_sdk_http_exporter_sends(live_server, acme, make_key):
    exporter = HttpMetrics(
        endpoint=f"{live_server.url}/v1/metrics",
        headers={"Authorization": f"Bearer {make_key(acme, 'ingest')}"},
        preferred_temporality=delta(),
    )
    send_metrics(exporter, fixture(CLAUDE_CODE_METRICS))
    with tenant_scope(acme):
        points = list(MetricPoint.objects.all())
        assert len(points) == 16
        tokens = {
            (p.model, p.attributes["type"]): p.value
            for p in points
            if p.name == "claude_code.token.usage"
        }
        assert tokens[("claude-sonnet-4-5-20250929", "cacheRead")] == 37500
        cost = next(p for p in points if p.name == "claude_code.cost.usage" and "haiku" in p.model)
        assert cost.value == pytest.approx(0.0021) and cost.unit == "USD"
        assert not cost.cumulative and cost.kind == MetricKind.SUM
        assert (cost.service_name, cost.service_version) == ("claude-code", "2.1.121")
        assert cost.user_email.startswith("[EMAIL:")  # redacted like span attributes
        assert cost.organization_id == "9c0d1e2f-3a4b-5c6d-7e8f-9a0b1c2d3e4f"
        assert cost.terminal_type == "vscode"
        assert cost.session_id == "6f1c2b9e-3d1a-4b7e-9c55-0e2a7d4b1f10"
        assert "user.email" not in cost.attributes and "model" not in cost.attributes


def test_it_keeps_emails_a_tenant_asks_to_keep(live_server, acme, make_key):
    from controlplane.services import Actor
    from tracing.services import redaction_policy_update

    redaction_policy_update(
        tenant=acme,
        custom_patterns=[],
        drop_keys=[],
        never_scan_keys=["user.email"],
        actor=Actor.system(),
    )
    send_metrics(
        HttpMetrics(
            endpoint=f"{live_server.url}/v1/metrics",
            headers={"Authorization": f"Bearer {make_key(acme, 'ingest')}"},
        ),
        fixture(CLAUDE_CODE_METRICS),
    )
    with tenant_scope(acme):
        assert set(MetricPoint.objects.values_list("user_email", flat=True)) == {"dev@acme.example"}


def test_it_stores_what_the_sdk_grpc_exporter_sends(grpc_address, acme, make_key):
    exporter = GrpcMetrics(
        endpoint=grpc_address,
        insecure=True,
        headers=(("authorization", f"Bearer {make_key(acme, 'ingest')}"),),
    )
    send_metrics(exporter, fixture(CLAUDE_CODE_METRICS))
    with tenant_scope(acme):
        points = list(MetricPoint.objects.filter(name="claude_code.lines_of_code.count"))
        # The SDK's default temporality is cumulative: each export (the flush, then the
        # shutdown) repeats the running totals, and the points say so.
        assert {p.attributes["type"]: p.value for p in points} == {"added": 120, "removed": 35}
        assert all(p.cumulative for p in points) and len({p.time for p in points}) == 2
        assert MetricPoint.objects.count() == 32


def point_doc(*points, name="claude_code.cost.usage", kind="sum"):
    data = {"dataPoints": list(points)}
    if kind == "sum":
        data.update(aggregationTemporality=1, isMonotonic=True)
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]
                },
                "scopeMetrics": [{"metrics": [{"name": name, "unit": "USD", kind: data}]}],
            }
        ]
    }


def post(live_server, key, doc):
    return httpx.post(
        f"{live_server.url}/v1/metrics",
        content=json.dumps(doc).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


def test_it_stores_a_resent_batch_once_and_refuses_bad_points(live_server, acme, make_key):
    key = make_key(acme, "ingest")
    now = time.time_ns()
    good = {"timeUnixNano": str(now), "asDouble": 0.5}
    doc = point_doc(good)
    for _ in range(2):
        resp = post(live_server, key, doc)
        assert resp.status_code == 200 and resp.json() == {}, resp.text
    bad = point_doc(
        {"timeUnixNano": str(now), "asDouble": "NaN"},
        {"asDouble": 1.0},
        {"timeUnixNano": str(2**63), "asDouble": 1.0},
        {"timeUnixNano": "1000", "asDouble": 1.0},
        {"timeUnixNano": str(now + 5_000_000), "asInt": "3"},
    )
    resp = post(live_server, key, bad)
    assert resp.status_code == 200, resp.text
    partial = resp.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "4"
    assert (
        "finite" in partial["errorMessage"]
        and "time_unix_nano is required" in partial["errorMessage"]
    )
    histogram = point_doc(
        {
            "timeUnixNano": str(now),
            "count": "3",
            "sum": 12.5,
            "explicitBounds": [1, 10],
            "bucketCounts": ["1", "1", "1"],
        },
        {"timeUnixNano": str(now), "count": "1", "explicitBounds": [1], "bucketCounts": ["1"]},
        name="claude_code.api.duration",
        kind="histogram",
    )
    partial = post(live_server, key, histogram).json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "1" and "bucket_counts" in partial["errorMessage"]
    summary = point_doc({"timeUnixNano": str(now)}, name="x.summary", kind="summary")
    partial = post(live_server, key, summary).json()["partialSuccess"]
    assert (
        partial["rejectedDataPoints"] == "1" and "summary is not stored" in partial["errorMessage"]
    )
    with tenant_scope(acme):
        assert MetricPoint.objects.filter(name="claude_code.cost.usage").count() == 2
        h = MetricPoint.objects.get(kind=MetricKind.HISTOGRAM)
        assert (h.value, h.count, h.buckets) == (12.5, 3, {"bounds": [1, 10], "counts": [1, 1, 1]})


def test_another_tenant_sees_none_of_them(live_server, acme, globex, make_key):
    assert post(live_server, make_key(globex, "ingest"), point_doc(
        {"timeUnixNano": str(time.time_ns()), "asDouble": 0.5})).status_code == 200  # fmt: skip
    with tenant_scope(acme):
        assert not MetricPoint.objects.exists()
    with tenant_scope(globex):
        assert MetricPoint.objects.count() == 1


@pytest.mark.postgres
def test_it_partitions_points_by_day_on_postgresql(live_server, acme, make_key):
    key = make_key(acme, "ingest")
    day = 86_400 * 10**9
    now = time.time_ns()
    doc = point_doc(*({"timeUnixNano": str(now - d * day), "asDouble": 1.0} for d in range(3)))
    assert post(live_server, key, doc).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'tracing_metricpoint'::regclass"
        )
        assert cursor.fetchone()[0] >= 3
        cursor.execute("SELECT count(*) FROM ONLY tracing_metricpoint")
        assert cursor.fetchone()[0] == 0
    with tenant_scope(acme):
        assert MetricPoint.objects.count() == 3
