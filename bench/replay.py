"""Replay's figures (run by `make bench`):

- a 100-step agent (each step an LLM call carrying the whole conversation so far) run
  live against the local Messages API server answering in 200 ms, then replayed from
  its journal: both durations (claim to outcome, in this process) and their ratio;
- journal bytes per step at 10 and 100 steps (the rows' request and result columns as
  stored, sealed): flat, since a step refers to its conversation instead of copying it;
- the gateway round trip with the step identity (request hash + occurrence): a no-op
  tool call timed inside the sandbox, live, then the same calls answered from the
  journal by a replay.

Runs on the embedded default in a temporary folder, like bench/execution.py
(BENCH_DATABASE_URL points the database at an empty scratch PostgreSQL database).
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(tempfile.mkdtemp(prefix="flightdeck-bench-replay-"))
for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "BLOB_STORE_URL"):
    os.environ.pop(name, None)
os.environ.update(
    {
        "DEBUG": "0",  # as deployed: DEBUG keeps and quotes every query it runs
        "FLIGHTDECK_VAR_DIR": str(VAR),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "EXECUTION_QUEUE": f"bench-replay-{os.getpid()}",
        "LOG_LEVEL": "WARNING",
    }
)
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from controlplane.services import Actor, tenant_create  # noqa: E402
from controlplane.tenancy import tenant_scope  # noqa: E402
from execution import services  # noqa: E402
from execution.devllm.server import serve  # noqa: E402
from execution.models import Run  # noqa: E402
from execution.testing import agent_with_bundle, run_now  # noqa: E402
from replay.models import JournalStep  # noqa: E402
from replay.services import run_replay_create  # noqa: E402

CONVERSATION = """
def main(ctx, input):
    messages = []
    for n in range(input["steps"]):
        messages.append({"role": "user", "content": f"step {n}: go on"})
        reply = ctx.llm.messages(messages=messages, max_tokens=40)
        messages.append({"role": "assistant", "content": reply.content})
    return {"turns": len(messages), "last": reply.content[0].text}
"""
ROUND_TRIP = """
import time

def main(ctx, input):
    times = []
    for i in range(input["n"]):
        started = time.perf_counter()
        ctx.tool("echo", i=i)
        times.append((time.perf_counter() - started) * 1000)
    return times
"""
LIMITS = "[limits]\nmax_steps = 5000\nmax_tool_calls = 5000\nwall_seconds = 600\n"
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n' + LIMITS


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def elapsed(run: Run) -> float:
    run.refresh_from_db()
    return (run.finished_at - run.started_at).total_seconds()


def replay_now(tenant, source: Run) -> Run:
    with tenant_scope(tenant):
        replay = run_replay_create(source=source, actor=Actor.system())
        services.run_execute(run_id=replay.pk, worker_id="bench")
        replay.refresh_from_db()
    return replay


def journal_bytes(run: Run) -> int:
    """The request and result columns as stored (sealed bytes)."""
    table = JournalStep._meta.db_table
    size = "octet_length" if connection.vendor == "postgresql" else "length"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT SUM(COALESCE({size}(request), 0) + COALESCE({size}(result), 0)) "  # noqa: S608
            f"FROM {table} WHERE run_id = %s",
            [run.pk],
        )
        return int(cursor.fetchone()[0] or 0)


def main():
    call_command("migrate", verbosity=0)
    llm = serve(port=0)
    settings.EXECUTION_LLM_BASE_URL = llm.url
    settings.EXECUTION_SANDBOX = "bwrap"
    tenant = tenant_create(slug="bench")

    agent = agent_with_bundle(tenant, name="conversation", code=CONVERSATION, manifest=MANIFEST)
    llm.latency_ms = 200
    live = run_now(tenant, agent, input={"steps": 100})
    assert live.status == "succeeded", live.error
    replay = replay_now(tenant, live)
    assert replay.status == "succeeded" and replay.output == live.output, replay.error
    live_s, replay_s = elapsed(live), elapsed(replay)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(
        f"100-step run, LLM at 200 ms a call: live {live_s:.2f} s, replay {replay_s:.3f} s, "
        f"replay {live_s / replay_s:.0f}x faster (target: at least 100x)"
    )
    per_step = {}
    short = run_now(tenant, agent, input={"steps": 10})
    for run in (short, live):
        steps = JournalStep.all_tenants.filter(run=run).count()
        per_step[steps] = journal_bytes(run) / steps
    print(
        "journal: "
        + ", ".join(f"{b:.0f} bytes per step over {n} steps" for n, b in per_step.items())
        + " (request + result as stored, sealed)"
    )

    llm.latency_ms = 0
    rt = agent_with_bundle(tenant, name="round-trip", code=ROUND_TRIP, manifest=MANIFEST)
    source = run_now(tenant, rt, input={"n": 1000})
    assert source.status == "succeeded", source.error
    trips = source.output[50:]
    print(
        f"gateway round trip, no-op tool, live: p50 {pct(trips, 50):.3f} ms, "
        f"p95 {pct(trips, 95):.3f} ms (target: p50 under 1 ms)"
    )
    served = replay_now(tenant, source)
    assert served.status == "succeeded", served.error
    trips = served.output[50:]
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"gateway round trip, answered from the journal: p50 {pct(trips, 50):.3f} ms, "
        f"p95 {pct(trips, 95):.3f} ms (median {statistics.median(trips):.3f} ms; "
        f"journal on {engine})"
    )
    llm.shutdown()


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(bench/replay.py took {time.perf_counter() - started:.0f} s)")
