"""Billing's figures (not part of CI):

- reservations + settlements per second: 16 client threads, each reserving an LLM
  call's worst case against one tenant budget and settling it, through the gateway's
  budget hook, on PostgreSQL (database store) and on Redis (Lua store);
- ingest spans/s with cost computation off and on: OTLP batches of agent traces
  (bench/ingest.py's) through the span path in this process; "on" adds the
  spans_ingested receiver queuing the costing task (what the request pays), and the
  costing itself is timed as a worker runs it (what the platform pays);
- gateway round trip with the budget hook: a no-op tool call timed inside the sandbox
  (bench/execution.py's agent), with a tenant budget so each call is reserved and
  settled, against the same without the hook.

Each pass runs in its own process: the embedded default (SQLite), then PostgreSQL on
a scratch database created and dropped here (BENCH_PG_URL, default the local server).
Targets: ingest overhead under 10 %; hook round trip p50 under 1 ms embedded, 2 ms
PostgreSQL.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ROUNDS = int(os.environ.get("BILLING_BENCH_ROUNDS", "2"))


def main() -> None:
    if os.environ.get("BILLING_BENCH_PASS"):
        return run_pass(os.environ["BILLING_BENCH_PASS"])
    env = {**os.environ, "BILLING_BENCH_PASS": "embedded"}
    env.pop("BENCH_DATABASE_URL", None)
    subprocess.run([sys.executable, __file__], env=env, check=True)
    name = f"flightdeck_bench_billing_{os.getpid()}"
    if _psql(f"CREATE DATABASE {name}") is None:
        print("PostgreSQL pass skipped: the server cannot be reached")
        return
    try:
        env = {
            **os.environ,
            "BILLING_BENCH_PASS": "postgresql",
            "BENCH_DATABASE_URL": f"{PG_SERVER}/{name}",
        }
        subprocess.run([sys.executable, __file__], env=env, check=True)
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _psql(sql: str):
    try:
        import psycopg

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as c:
            return c.execute(sql)
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        print(f"  ({exc})")
        return None


def run_pass(kind: str) -> None:
    # bench/execution.py sets up the environment (scratch folder, BENCH_DATABASE_URL)
    # and Django; its round-trip agent is reused below.
    sys.path.insert(0, str(ROOT))
    from django.conf import settings
    from django.core.management import call_command

    from bench import execution as ex

    call_command("migrate", verbosity=0)
    from billing import services as billing_services
    from billing.models import Budget, PriceBook
    from controlplane.services import tenant_create
    from controlplane.tenancy import tenant_scope

    if not PriceBook.objects.exists():
        billing_services.price_book_load_file(path=billing_services.seed_path())
    llm = ex.serve(port=0)
    settings.EXECUTION_LLM_BASE_URL = llm.url
    tenant = tenant_create(slug="bench")
    with tenant_scope(tenant):
        Budget.objects.create(tenant=tenant, scope="tenant", period="month", cap_nusd=10**18)
    print(f"--- {kind} ---")
    target = 1 if kind == "embedded" else 2
    for i in range(ROUNDS):  # with, without, with, without: interleaved
        for hook in (True, False):
            times = _round_trip(ex, tenant, hook=hook, round_=i)
            print(
                f"gateway round trip, no-op tool, {'with' if hook else 'without'} the budget "
                f"hook, round {i + 1}: p50 {ex.pct(times, 50):.3f} ms, p95 "
                f"{ex.pct(times, 95):.3f} ms (target with: p50 under {target} ms; "
                f"load {os.getloadavg()[0]:.1f})"
            )
    _ingest(tenant)
    if kind == "postgresql":
        stores = ["database"]
        try:
            import redis

            redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
        except Exception:  # noqa: BLE001
            print("Redis pass skipped: the server cannot be reached")
        else:
            settings.REDIS_URL = REDIS
            settings.REDIS_PREFIX = f"fdbench-{os.getpid()}:"
            stores.append("redis")
        for i in range(ROUNDS):  # PostgreSQL, Redis, PostgreSQL, Redis
            for store in stores:
                rate = _reserve_settle(tenant, clients=16, store=store)
                print(
                    f"reservations + settlements per second, 16 clients, "
                    f"{'PostgreSQL' if store == 'database' else 'Redis store'}, round {i + 1}: "
                    f"{rate:,.0f} (load {os.getloadavg()[0]:.1f})"
                )
    llm.shutdown()


def _round_trip(ex, tenant, *, hook: bool, round_: int = 0) -> list[float]:
    from django.conf import settings

    settings.EXECUTION_SANDBOX = "bwrap"
    settings.EXECUTION_BUDGET_HOOK = "billing.hook.BudgetHook" if hook else ""
    name = f"round-trip-{'hook' if hook else 'plain'}-{round_}"
    # A loaded machine can take more than the default two minutes for 1,000 calls.
    manifest = ex.MANIFEST + "wall_seconds = 900\ncpu_seconds = 600\n"
    agent = ex.agent_with_bundle(tenant, name=name, code=ex.ROUND_TRIP, manifest=manifest)
    run = ex.run_now(tenant, agent, input={"n": 1000})
    assert run.status == "succeeded", (run.status, run.stop_reason, run.error)
    settings.EXECUTION_BUDGET_HOOK = "billing.hook.BudgetHook"
    return run.output[50:]


def _ingest(tenant, traces=40, steps=10, rounds=3) -> None:
    import statistics

    from django.conf import settings
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from bench.ingest import requests_for
    from billing import costs
    from tracing.ingest.pipeline import spans_ingest

    # What a deployment runs: Django's SQL log (DEBUG) would be most of costing's time.
    settings.DEBUG = False

    def batches():
        bodies, total, _ = requests_for(traces, steps)
        return [ExportTraceServiceRequest.FromString(b) for b in bodies], total

    def ingest(requests) -> tuple[float, float]:
        """Seconds of wall time, and of this process's CPU (the embedded database's work
        included; less at the mercy of a loaded machine)."""
        started, cpu = time.perf_counter(), time.process_time()
        for request in requests:
            spans_ingest(tenant_id=tenant.id, request=request)
        return time.perf_counter() - started, time.process_time() - cpu

    def cost(requests) -> tuple[float, float]:
        """The queued costing of these spans, as a worker runs it (500 spans a task)."""
        pairs = [
            (span.trace_id.hex(), span.span_id.hex())
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(pairs), 500):
            costs.spans_cost(tenant_id=tenant.id, spans=pairs[start : start + 500])
        return time.perf_counter() - started, time.process_time() - cpu

    ingest(batches()[0])  # warm: dictionaries trained, caches filled
    off, on, costing = [], [], []
    for _ in range(rounds):  # off, on, off, on, ...: interleaved, medians compared
        for cost_on in (False, True):
            settings.BILLING_COST_ON_INGEST = cost_on
            requests, total = batches()
            wall, cpu = ingest(requests)
            (on if cost_on else off).append((wall / total, cpu / total))
            if cost_on:
                wall, cpu = cost(requests)
                costing.append((wall / total, cpu / total))
    for what, i in (("wall", 0), ("CPU", 1)):
        off_s, on_s, cost_s = (statistics.median(r[i] for r in v) for v in (off, on, costing))
        print(
            f"ingest spans/s ({steps}-step traces, {what} time): cost off {1 / off_s:,.0f}, "
            f"on {1 / on_s:,.0f} (request path {100 * (on_s / off_s - 1):+.1f} %); costing "
            f"on the worker {1 / cost_s:,.0f}; ingest and costing together "
            f"{100 * ((on_s + cost_s) / off_s - 1):+.1f} % of ingest alone"
        )
    print(
        f"  (target under 10 %; medians of {rounds} interleaved rounds, load {os.getloadavg()[0]:.1f})"
    )


def _reserve_settle(tenant, *, clients: int, store: str, seconds: float = 5.0) -> float:
    from django.conf import settings
    from django.db import connection

    from billing.hook import BudgetHook
    from controlplane.tenancy import tenant_scope
    from execution.models import Run

    settings.BILLING_BUDGET_STORE = store
    with tenant_scope(tenant):
        run_id = Run.objects.order_by("pk").values_list("pk", flat=True).first()
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hello " * 50}],
    }
    usage = {"input_tokens": 80, "output_tokens": 200}
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        hook = BudgetHook()
        with tenant_scope(tenant):
            while time.perf_counter() < stop:
                held = hook.reserve(run_id=run_id, request=request)
                hook.settle(reservation=held, usage=usage)
                counts[i] += 1
            hook.flush()
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
