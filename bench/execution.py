"""Managed execution's figures (run by `make bench`):

- sandbox start p50/p95: from backend.start() until the sandboxed Python prints its
  first line (bubblewrap, cgroups, uid switch and rlimits included);
- gateway round trip p50/p95: a no-op tool call (`echo`) timed inside the sandbox,
  through the runtime, the socket, the gateway and the journal's commit;
- runs completed per second: no-op runs through a real Celery worker (concurrency 2).

It runs on the embedded default (SQLite, file broker, blob folder) in a temporary
folder, so it touches nothing of `make run`'s data; BENCH_DATABASE_URL points the
database at an empty scratch PostgreSQL database instead.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(tempfile.mkdtemp(prefix="flightdeck-bench-"))
ENV = {
    "DEBUG": "1",
    "FLIGHTDECK_VAR_DIR": str(VAR),
    "DJANGO_SETTINGS_MODULE": "controlplane.settings",
    "EXECUTION_QUEUE": f"bench-{os.getpid()}",
    "LOG_LEVEL": "WARNING",
}
for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "BLOB_STORE_URL"):
    os.environ.pop(name, None)
os.environ.update(ENV)
# BENCH_DATABASE_URL (an empty scratch database) measures the journal on PostgreSQL.
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from controlplane.services import Actor, tenant_create  # noqa: E402
from controlplane.tenancy import tenant_scope  # noqa: E402
from execution import services  # noqa: E402
from execution.devllm.server import serve  # noqa: E402
from execution.models import Run  # noqa: E402
from execution.runner import run_dirs  # noqa: E402
from execution.sandbox import SANDBOX_PYTHON, SandboxSpec, get_backend  # noqa: E402
from execution.sandbox.resources import Limits, remove_tree  # noqa: E402
from execution.testing import agent_with_bundle, run_now  # noqa: E402


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def sandbox_start(name: str, n=60) -> list[float]:
    backend = get_backend(name)
    folder = run_dirs(0)
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            box = backend.start(
                SandboxSpec(
                    argv=[SANDBOX_PYTHON, "-S", "-I", "-c", "print('ready', flush=True)"],
                    scratch=folder / "scratch",
                    limits=Limits(),
                    stdout=subprocess.PIPE,
                )
            )
            box.proc.stdout.readline()
            times.append((time.perf_counter() - started) * 1000)
            box.wait()
            box.proc.stdout.close()
            box.close()
    finally:
        remove_tree(folder)
    return times, backend.name


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
NOOP = "def main(ctx, input):\n    return None\n"
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n[limits]\nmax_steps = 5000\nmax_tool_calls = 5000\n'


def gateway_round_trip(tenant, n=1000) -> list[float]:
    settings.EXECUTION_SANDBOX = "bwrap"
    rt = agent_with_bundle(tenant, name="round-trip", code=ROUND_TRIP, manifest=MANIFEST)
    run = run_now(tenant, rt, input={"n": n})
    assert run.status == "succeeded", run.error
    return run.output[50:]  # past the first calls (connections, caches)


def runs_per_second(tenant, sandbox: str, n=40) -> float:
    noop = agent_with_bundle(tenant, name=f"noop-{sandbox}", code=NOOP, manifest=MANIFEST)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXECUTION_SANDBOX": sandbox}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "-Q",
            ENV["EXECUTION_QUEUE"],
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def queue():
        return services.run_create(
            tenant=tenant,
            agent=noop,
            version=None,
            input=None,
            limits=None,
            actor=Actor.system(),
        )

    try:
        with tenant_scope(tenant):
            warm = queue()
            while Run.objects.filter(pk=warm.pk, status="succeeded").count() == 0:
                time.sleep(0.05)  # the worker is up and warm
            started = time.perf_counter()
            ids = [queue().pk for _ in range(n)]
            while (
                Run.objects.filter(
                    pk__in=ids, status__in=["succeeded", "failed", "stopped"]
                ).count()
                < n
            ):
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
            failed = Run.objects.filter(pk__in=ids).exclude(status="succeeded").count()
            assert failed == 0, f"{failed} no-op runs did not succeed"
        return n / elapsed
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main():
    call_command("migrate", verbosity=0)
    llm = serve(port=0)
    settings.EXECUTION_LLM_BASE_URL = llm.url
    tenant = tenant_create(slug="bench")

    starts, backend = sandbox_start("bwrap")
    print(
        f"sandbox start ({backend}): p50 {pct(starts, 50):.1f} ms, p95 {pct(starts, 95):.1f} ms "
        f"(target: p50 under 30 ms)"
    )
    from execution.sandbox.runsc import RunscBackend

    if RunscBackend.available():
        starts, backend = sandbox_start("runsc", n=15)
        print(
            f"sandbox start ({backend}, gVisor): p50 {pct(starts, 50):.1f} ms, "
            f"p95 {pct(starts, 95):.1f} ms"
        )
    trips = gateway_round_trip(tenant)
    print(
        f"gateway round trip (bwrap), no-op tool: p50 {pct(trips, 50):.3f} ms, p95 {pct(trips, 95):.3f} ms "
        f"(target: p50 under 1 ms)"
    )
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"  (median of {len(trips)}: {statistics.median(trips):.3f} ms; journal on {engine})")
    for sandbox in ["bwrap"] + (["runsc"] if RunscBackend.available() else []):
        rate = runs_per_second(tenant, sandbox)
        print(
            f"runs completed per second ({sandbox}), no-op agent, 2 worker processes "
            f"on {os.cpu_count()} cores: {rate:.1f}"
        )
    llm.shutdown()
    remove_tree(VAR)


if __name__ == "__main__":
    main()
