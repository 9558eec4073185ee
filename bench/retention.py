"""Retention: traces moved to warm per second, objects and bytes per trace in each
tier, and a trace's read latency in each tier.

Loads agent traces (bench/query.py's: 21 spans each, a conversation resent every step,
tool results of prose or code) plus one 2,001-span trace over OTLP/HTTP into a fresh
PostgreSQL + S3 (moto) platform with a real worker building the search index, then runs
`manage.py apply_retention --as-of` twice (every trace warm, then every trace cold) and
measures between the runs:

- traces moved to warm per second (the command's wall time less a run with nothing due),
- rows, objects and bytes per trace: hot (span and payload rows, payload blobs, the
  search index) versus warm and cold (the trace row and its bundle),
- GET /api/v1/traces/{id} of the 2,001-span trace in each tier (p50 over RUNS; the web
  process keeps a few decoded bundles), and opening its bundle uncached in-process
  (GET from S3, decompress, index, span tree).

Target: a warm 2,001-span trace opens in under 300 ms p50.
BENCH_SPANS changes the load (default 20,000 spans).
"""

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Platform, manage  # noqa: E402
from bench.query import big_trace, load  # noqa: E402

RUNS = 30
DAYS = 40  # each tier's days in the bench's policy: loaded traces are 0-30 days old

POLICY = f"""
from controlplane.models import Tenant
from tracing.retention.models import RetentionPolicy
RetentionPolicy.all_tenants.update_or_create(
    tenant=Tenant.objects.get(slug="bench"),
    defaults=dict(hot_days={DAYS}, warm_days={DAYS}, cold_days={DAYS}, extended_days=0),
)
"""

OPEN_UNCACHED = """
import statistics, time, uuid
from controlplane.models import Tenant
from controlplane.tenancy import tenant_scope
from tracing.query.traces import trace_spans
from tracing.retention import bundles
tenant = Tenant.objects.get(slug="bench")
times = []
with tenant_scope(tenant):
    for _ in range({runs}):
        bundles.cache.reset()
        start = time.perf_counter()
        rows = trace_spans(trace_id=uuid.UUID(hex="{trace}"))
        times.append((time.perf_counter() - start) * 1000)
assert len(rows) == 2001, len(rows)
print(statistics.median(times))
"""


def as_of(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def figures(platform: Platform) -> dict:
    rows = dict(platform.sql("SELECT 'spans', COUNT(*) FROM tracing_span"))
    rows.update(platform.sql("SELECT 'payloads', COUNT(*) FROM tracing_payload"))
    rows.update(platform.sql("SELECT 'texts', COUNT(*) FROM tracing_tracetext"))
    traces = platform.sql("SELECT COUNT(*) FROM tracing_trace")[0][0]
    objects = 0
    for page in platform.s3.get_paginator("list_objects_v2").paginate(Bucket="bench"):
        objects += len(page.get("Contents", []))
    tables = platform.stored_by_table()
    trace_tables = {k: v for k, v in tables.items() if k.startswith("tracing_")}
    return {
        "traces": traces,
        "rows": rows,
        "objects": objects,
        "db_bytes": sum(trace_tables.values()),
        "blob_bytes": platform.blob_bytes(),
    }


def per_trace(f: dict) -> str:
    n = max(f["traces"], 1)
    rows = sum(f["rows"].values()) + f["traces"]
    return (
        f"{rows / n:8.1f} rows  {f['objects'] / n:6.2f} objects  "
        f"{f['db_bytes'] / n:9.0f} B database  {f['blob_bytes'] / n:9.0f} B blob store"
    )


def read_p50(client: httpx.Client, trace: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        resp = client.get(f"/api/v1/traces/{trace}")
        times.append((time.perf_counter() - start) * 1000)
        resp.raise_for_status()
    assert len(resp.json()["spans"]) >= 1
    return statistics.median(times)


def open_uncached(platform: Platform, trace: str) -> float:
    out = manage(platform.env, "shell", "-c", OPEN_UNCACHED.format(runs=RUNS, trace=trace))
    return float(out.strip().splitlines()[-1])


def main() -> None:
    platform = Platform("postgres+s3")
    try:
        platform.serve()
        platform.worker()
        traces, spans = load(platform, int(os.environ.get("BENCH_SPANS", 20_000)))
        big = big_trace(platform)
        time.sleep(5)  # the worker's indexing (not measured)
        manage(platform.env, "shell", "-c", POLICY)
        client = httpx.Client(
            base_url=platform.url,
            timeout=60,
            headers={"Authorization": f"Bearer {platform.key}"},
        )
        hot = figures(platform)
        hot_read = read_p50(client, big)

        idle_start = time.perf_counter()
        manage(platform.env, "apply_retention", "--as-of", as_of(0))
        idle = time.perf_counter() - idle_start
        start = time.perf_counter()
        out = manage(platform.env, "apply_retention", "--as-of", as_of(DAYS + 1))
        moving = time.perf_counter() - start - idle
        warm = figures(platform)
        warm_read = read_p50(client, big)
        warm_open = open_uncached(platform, big)
        manage(platform.env, "apply_retention", "--as-of", as_of(2 * DAYS + 1))
        cold = figures(platform)
        cold_read = read_p50(client, big)
        cold_open = open_uncached(platform, big)
        moved = traces + 1
        print(f"load: {traces + 1} traces, {spans + 2001} spans; load average {os.getloadavg()}")
        print(out.strip())
        print(f"moved to warm: {moved} traces in {moving:.1f} s = {moved / moving:.1f} traces/s")
        print(f"hot : {per_trace(hot)}   (rows: {hot['rows']})")
        print(f"warm: {per_trace(warm)}   (rows: {warm['rows']})")
        print(f"cold: {per_trace(cold)}   (rows: {cold['rows']})")
        print(
            f"2,001-span trace, GET /api/v1/traces/{{id}} p50: hot {hot_read:.0f} ms, "
            f"warm {warm_read:.0f} ms, cold {cold_read:.0f} ms"
        )
        print(
            f"2,001-span trace, bundle opened uncached (S3 GET + decode + tree) p50: "
            f"warm {warm_open:.0f} ms, cold {cold_open:.0f} ms (target warm < 300 ms)"
        )
    finally:
        platform.stop()


if __name__ == "__main__":
    main()
