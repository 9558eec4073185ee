"""GET /api/v1/metrics: a tenant's stored series in hour or day buckets, summed for
counters (a cumulative series by its rises), averaged for gauges; filtered and grouped
by user, model or any attribute; bad parameters are 400s naming them; another tenant's
points are never read."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tracing.codingagents.metrics import metric_points_ingest
from tracing.ingest.decode import decode_request

pytestmark = pytest.mark.django_db(transaction=True)
# An hour boundary a few hours back: points sit at known buckets. The windows run three
# hours from it, inside one UTC day, so a day bucket holds a whole window whatever the
# hour the tests run at (from 03:00 to 05:00 UTC they crossed midnight).
_BACK = (datetime.now(UTC) - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
T0 = _BACK.replace(hour=min(_BACK.hour, 21))
COST = "claude_code.cost.usage"


def _ns(moment: datetime) -> str:
    return str(int(moment.timestamp() * 10**9))


def _value(key, value):
    return {"key": key, "value": {"stringValue": value}}


def ingest(tenant, points, *, name=COST, kind="sum", cumulative=False, user="dev@acme.example"):
    """points: [(minutes after T0, value, {attribute: value})]."""
    data = {
        "dataPoints": [
            {
                "timeUnixNano": _ns(T0 + timedelta(minutes=m)),
                "startTimeUnixNano": _ns(T0),
                "asDouble": v,
                "attributes": [_value(k, a) for k, a in attrs.items()],
            }
            for m, v, attrs in points
        ]
    }
    if kind == "sum":
        data.update(aggregationTemporality=2 if cumulative else 1, isMonotonic=True)
    resource = [_value("service.name", "claude-code"), _value("user.email", user),
                _value("user.id", f"id-{user}")]  # fmt: skip
    doc = {"resourceMetrics": [{"resource": {"attributes": resource}, "scopeMetrics": [
        {"metrics": [{"name": name, "unit": "USD", kind: data}]}]}]}  # fmt: skip
    request = decode_request(
        json.dumps(doc).encode(), "application/json", ExportMetricsServiceRequest
    )
    assert metric_points_ingest(tenant_id=tenant.id, request=request).rejected == 0


def window(**params):
    base = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=3)).isoformat()}
    return {**base, **params}


def test_it_sums_counters_by_hour_and_user(api, acme, make_key):
    ingest(acme, [(5, 0.5, {"model": "sonnet"}), (65, 0.25, {"model": "haiku"})])
    ingest(acme, [(10, 1.0, {"model": "sonnet"})], user="ops@acme.example")
    key = make_key(acme, "read")
    body = api.get("/api/v1/metrics", key=key, params=window(name=COST, group_by="user")).json()
    assert body["aggregation"] == "sum" and body["unit"] == "USD" and body["interval"] == "hour"
    assert body["buckets"] == [(T0 + timedelta(hours=h)).isoformat() for h in range(3)]
    series = {s["group"]: s["values"] for s in body["series"]}
    # E-mails are stored as their placeholders (redacted as span attributes are).
    assert all(g.startswith("[EMAIL:") for g in series)
    assert sorted(series.values()) == [[0.5, 0.25, 0.0], [1.0, 0.0, 0.0]]
    # A filter by the address matches its stored placeholder; model filters too.
    only = api.get("/api/v1/metrics", key=key, params=window(
        name=COST, user="dev@acme.example", model="sonnet", interval="day")).json()  # fmt: skip
    assert [s["values"] for s in only["series"]] == [[0.5]] and only["series"][0]["group"] is None
    by_model = api.get("/api/v1/metrics", key=key, params=window(name=COST, group_by="model"))
    assert {s["group"]: sum(s["values"]) for s in by_model.json()["series"]} == {
        "haiku": 0.25, "sonnet": 1.5}  # fmt: skip


def test_a_cumulative_series_counts_its_rises(api, acme, make_key):
    ingest(acme, [(10, 1.0, {}), (70, 3.0, {}), (130, 6.0, {})], cumulative=True)
    key = make_key(acme, "read")
    body = api.get("/api/v1/metrics", key=key, params=window(name=COST)).json()
    assert [s["values"] for s in body["series"]] == [[1.0, 2.0, 3.0]]
    # From the second hour on: the series began before, so its first point there only
    # says where it stood.
    later = window(name=COST, since=(T0 + timedelta(hours=1)).isoformat())
    body = api.get("/api/v1/metrics", key=key, params=later).json()
    assert [s["values"] for s in body["series"]] == [[0.0, 3.0]]


def test_it_averages_gauges_and_groups_by_any_attribute(api, acme, make_key):
    name = "claude_code.active_sessions"
    ingest(acme, [(1, 2.0, {"type": "a"}), (2, 4.0, {"type": "a"}), (3, 9.0, {"type": "b"})],
           name=name, kind="gauge")  # fmt: skip
    key = make_key(acme, "read")
    body = api.get("/api/v1/metrics", key=key, params=window(name=name, group_by="attr.type"))
    assert body.json()["aggregation"] == "avg"
    assert {s["group"]: s["values"] for s in body.json()["series"]} == {
        "a": [3.0, None, None], "b": [9.0, None, None]}  # fmt: skip
    only_b = api.get("/api/v1/metrics", key=key, params=window(name=name, **{"attr.type": "b"}))
    assert [s["values"][0] for s in only_b.json()["series"]] == [9.0]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "name"),
        ({"name": COST, "interval": "week"}, "interval"),
        ({"name": COST, "since": "yesterday"}, "since"),
        ({"name": COST, "since": "2026-12-02", "until": "2026-12-01"}, "since"),
        ({"name": COST, "colour": "red"}, "colour"),
        ({"name": COST, "group_by": "planet"}, "group_by"),
        ({"name": COST, "group_by": "attr."}, "group_by"),
        ({"name": COST, "since": "2020-01-01", "until": "2026-01-01"}, "interval"),
        ({"name": COST, "user": "u" * 300}, "user"),
        ({"name": COST, "model": "a\x00b"}, "model"),
        ({"name": "a\x00b"}, "name"),
        ({"name": COST, "until": "9999-12-31T23:59:59-05:00"}, "until"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api, acme, make_key, params, field):
    resp = api.get("/api/v1/metrics", key=make_key(acme, "read"), params=params)
    assert resp.status_code == 400 and field in resp.json()["detail"], resp.json()


def test_another_tenant_reads_none_of_them_and_a_key_needs_read(api, acme, globex, make_key):
    ingest(acme, [(5, 0.5, {})])
    body = api.get("/api/v1/metrics", key=make_key(globex, "read"), params=window(name=COST))
    assert body.status_code == 200 and body.json()["series"] == []
    assert api.get("/api/v1/metrics", params=window(name=COST)).status_code == 401
    mine = api.get("/api/v1/metrics", key=make_key(acme, "read"), params=window(name=COST))
    assert [s["values"] for s in mine.json()["series"]] == [[0.5, 0.0, 0.0]]


def test_it_is_in_the_openapi_schema(api):
    schema = api.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/metrics"]["get"]
    assert {"name", "since", "until", "interval", "group_by", "user", "model"} <= {
        p["name"] for p in operation["parameters"]
    }
