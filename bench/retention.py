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
- GET /api/v1/traces/{id} of a 2,001-span trace in each tier (the web process keeps a
  few decoded bundles), and opening its bundle uncached in-process (GET from S3,
  decompress, index, span tree). Two more 2,001-span traces are loaded after the moves
  and one of them moved to warm, so a hot, a warm and a cold one stand side by side:
  the reads run in ROUNDS, each reading every tier in turn (the order rotating), and
  print the load average beside each round; p50 over all rounds.

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
ROUNDS = 5  # RUNS // ROUNDS reads of each tier a round
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
print(" ".join(f"{{t:.3f}}" for t in times))
"""

# Ages one trace past the hot days, so the next run at "now" moves it alone to warm.
AGED = f"""
from datetime import timedelta
from django.db.models import F
from tracing.models import Trace
Trace.all_tenants.filter(trace_id="{{trace}}").update(
    start_time=F("start_time") - timedelta(days={DAYS + 1})
)
"""


def as_of(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def figures(platform: Platform) -> dict:
    rows = dict(platform.sql("SELECT 'spans', COUNT(*) FROM tracing_span"))
    rows.update(platform.sql("SELECT 'payloads', COUNT(*) FROM tracing_payload"))
    rows.update(platform.sql("SELECT 'search blocks', COUNT(*) FROM tracing_searchblock"))
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


def read_times(client: httpx.Client, trace: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        resp = client.get(f"/api/v1/traces/{trace}")
        times.append((time.perf_counter() - start) * 1000)
        resp.raise_for_status()
    assert len(resp.json()["spans"]) >= 1
    return times


def open_uncached(platform: Platform, trace: str, runs: int) -> list[float]:
    out = manage(platform.env, "shell", "-c", OPEN_UNCACHED.format(runs=runs, trace=trace))
    return [float(t) for t in out.strip().splitlines()[-1].split()]


def rotated(items: list, by: int) -> list:
    return items[by % len(items) :] + items[: by % len(items)]


def interleaved_reads(platform: Platform, client: httpx.Client, by_tier: dict) -> tuple:
    """{tier: trace} -> ({tier: API read times}, {tier: uncached open times})."""
    reads = {tier: [] for tier in by_tier}
    opens = {tier: [] for tier in by_tier if tier != "hot"}
    per = RUNS // ROUNDS
    for round_ in range(ROUNDS):
        for tier in rotated(list(reads), round_):
            reads[tier] += read_times(client, by_tier[tier], per)
        for tier in rotated(list(opens), round_):
            opens[tier] += open_uncached(platform, by_tier[tier], per)
        last = {t: statistics.median(v[-per:]) for t, v in reads.items()}
        opened = {t: statistics.median(v[-per:]) for t, v in opens.items()}
        print(
            f"round {round_ + 1}: API p50 "
            + ", ".join(f"{t} {ms:.0f} ms" for t, ms in last.items())
            + "; uncached open p50 "
            + ", ".join(f"{t} {ms:.0f} ms" for t, ms in opened.items())
            + f"; load average {os.getloadavg()}"
        )
    return reads, opens


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

        idle_start = time.perf_counter()
        manage(platform.env, "apply_retention", "--as-of", as_of(0))
        idle = time.perf_counter() - idle_start
        start = time.perf_counter()
        out = manage(platform.env, "apply_retention", "--as-of", as_of(DAYS + 1))
        moving = time.perf_counter() - start - idle
        warm = figures(platform)
        manage(platform.env, "apply_retention", "--as-of", as_of(2 * DAYS + 1))
        cold = figures(platform)
        moved = traces + 1
        print(f"load: {traces + 1} traces, {spans + 2001} spans; load average {os.getloadavg()}")
        print(out.strip())
        print(f"moved to warm: {moved} traces in {moving:.1f} s = {moved / moving:.1f} traces/s")
        print(f"hot : {per_trace(hot)}   (rows: {hot['rows']})")
        print(f"warm: {per_trace(warm)}   (rows: {warm['rows']})")
        print(f"cold: {per_trace(cold)}   (rows: {cold['rows']})")

        # A hot and a warm 2,001-span trace beside the cold one, for the reads.
        hot_big, warm_big = big_trace(platform), big_trace(platform)
        time.sleep(5)  # the worker's indexing (not measured)
        manage(platform.env, "shell", "-c", AGED.format(trace=warm_big))
        manage(platform.env, "apply_retention", "--as-of", as_of(0))
        by_tier = {"hot": hot_big, "warm": warm_big, "cold": big}
        reads, opens = interleaved_reads(platform, client, by_tier)
        p50 = {t: statistics.median(v) for t, v in reads.items()}
        opened = {t: statistics.median(v) for t, v in opens.items()}
        print(
            f"2,001-span trace, GET /api/v1/traces/{{id}} p50 over {ROUNDS} rounds: "
            + ", ".join(f"{t} {ms:.0f} ms" for t, ms in p50.items())
        )
        print(
            f"2,001-span trace, bundle opened uncached (S3 GET + decode + tree) p50: "
            f"warm {opened['warm']:.0f} ms, cold {opened['cold']:.0f} ms "
            f"(target warm < 300 ms); load average {os.getloadavg()}"
        )
    finally:
        platform.stop()


if __name__ == "__main__":
    main()
