"""The tenant's ingest rate over /v1/logs and /v1/metrics: one bucket with /v1/traces,
and the 429 names what the request counted."""

import json
import time

import httpx
import pytest

from tests.tracing.codingagents import CLAUDE_CODE, fixture, otlp_json

pytestmark = pytest.mark.django_db(transaction=True)


def post(live_server, key, path, doc):
    return httpx.post(
        f"{live_server.url}{path}",
        content=json.dumps(doc).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


def points(count: int) -> dict:
    now = time.time_ns()
    data = [{"timeUnixNano": str(now + i), "asDouble": 1.0} for i in range(count)]
    metric = {"name": "claude_code.session.count", "sum": {"dataPoints": data}}
    return {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}


def test_it_names_log_records_and_data_points_in_the_429(live_server, acme, make_key):
    acme.ingest_spans_per_second = 1  # a burst of two
    acme.save()
    key = make_key(acme, "ingest")
    doc = otlp_json(fixture(CLAUDE_CODE), start_ns=1_800_000_000 * 10**9)
    # A batch may take the bucket below zero; the next one waits.
    assert post(live_server, key, "/v1/logs", doc).status_code == 200
    logs = post(live_server, key, "/v1/logs", doc)
    assert logs.status_code == 429 and int(logs.headers["Retry-After"]) >= 1
    assert "rate of 1 log records a second" in logs.json()["detail"]
    assert "spans a second" not in logs.json()["detail"]
    metrics = post(live_server, key, "/v1/metrics", points(5))
    assert metrics.status_code == 429
    assert "rate of 1 metric data points a second" in metrics.json()["detail"]
