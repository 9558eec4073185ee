"""Scale-out figures (run by `make bench`), on PostgreSQL + Redis + a moto S3 server, with
the processes tests/platform/ starts (controlplane/loopback.py):

- OTLP spans/s with 1 and with 2 web processes (one gunicorn worker each), the same load
  from two clients of pre-encoded OTLP protobuf, each keeping CONNECTIONS requests in
  flight spread over the processes; the ratio (target >= 1.4x on 2 cores),
  the CPU seconds per 1,000 spans of each process kind and the cores each round kept
  busy (ours, other processes', idle: /proc/stat), which say where the time went, the
  ratio the machine allows at most, and so why a ratio falls short;
- the work ingest queues for later (search index, costing, alert detection), drained by
  one worker afterwards: its CPU seconds per 1,000 spans and PostgreSQL's, which say how
  many worker cores a given span rate needs beside the web's (docs/capacity.md);
- the web's and PostgreSQL's CPU per request of 2 spans and of 60 (one web process), and
  so the fixed cost of a request, which exporters flushing a span or two at a time pay
  per span;
- runs/s (no-op agent, in the settings' sandbox) with 1 and with 2 workers (two prefork
  pool processes each) and with 1 worker of 4 threads; the machine's CPU per run, which
  bounds runs/s however many slots there are, and the peak memory (PSS) of the workers
  with their runs' sandboxes per slot, which bounds how many runs a host holds at once
  (docs/capacity.md).

Rounds interleave the layouts and each figure is the median of ROUNDS. The load average
is printed beside every figure: under load the figures are indicative only.
"""

import sys

if __name__ == "platform":
    # Any script of bench/ runs with this folder first on its path, so the standard
    # library's `platform` (which uuid, boto3 and Django import) is looked for here first:
    # load that module in this one's place. What follows only defines this benchmark.
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location(
        "platform", f"{sysconfig.get_path('stdlib')}/platform.py"
    )
    sys.modules["platform"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["platform"])

import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Platform  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BATCHES = 24  # per client and round
# Requests each client keeps in flight, spread over the web processes as a balancer
# spreads connections: with one a client, each of 2 web processes would wait idle for its
# one client's next request while it is answered (docs/capacity.md).
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "2"))
TRACES, STEPS = 10, 5  # per batch: 60 spans
RUNS = 24  # per round
TAG = f"bench-platform-{os.getpid()}"
LOGS = Path(tempfile.gettempdir()) / f"fd-{TAG}"


def loadavg() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, its cores summed: what
    this bench's processes did not use of it went to other processes or stayed idle."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tck = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tck, (idle + iowait) / tck


def setup_env(platform: Platform) -> dict:
    env = {
        **platform.env,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/1",
        "FLIGHTDECK_REDIS_PREFIX": f"{TAG}:",
        # What ingest queues for indexing, costing and alerts waits on a queue of its own.
        "SEARCH_INDEX_QUEUE": f"{TAG}-later",
        "BILLING_QUEUE": f"{TAG}-later",
        "ALERTS_QUEUE": f"{TAG}-later",
        "EXECUTION_QUEUE": f"{TAG}-runs",
        "EXECUTION_TOOL_QUEUE": f"{TAG}-runs",
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    return env


def postgres_cpu(platform: Platform) -> dict[int, float]:
    from controlplane.loopback import cpu_of

    # The bench's own database, named by bench/common.py: its backends are the web's.
    name = platform.env["DATABASE_URL"].rsplit("/", 1)[1]
    query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}'"  # noqa: S608
    pids = [row[0] for row in platform.sql(query)]
    return {pid: cpu_of(pid) for pid in pids}


def cluster_cpu(platform: Platform) -> float:
    """CPU seconds of the whole PostgreSQL server so far, exited backends included (the
    postmaster reaps them: their time is in its cutime/cstime). Server-wide, so only
    meaningful while nothing else uses the server."""
    from controlplane.loopback import _children, cpu_of

    backend = platform.sql("SELECT pg_backend_pid()")[0][0]
    with open(f"/proc/{backend}/stat") as f:
        postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{postmaster}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return cpu_of(postmaster) + reaped + sum(cpu_of(p) for p in _children(postmaster))


def ingest_round(webs, key: str, bodies, platform: Platform) -> dict:
    from controlplane.loopback import cpu_of
    from tracing import otlpload

    urls = [f"http://127.0.0.1:{web.port}" for web in webs]
    web_before = [web.cpu_seconds() for web in webs]
    pg_before = postgres_cpu(platform)
    s3_before = cpu_of(platform.procs[0].pid)
    client_before = time.process_time()
    busy_before, idle_before = machine_cpu()
    seconds = otlpload.post_bodies(urls, key, bodies, connections=CONNECTIONS)
    busy_after, idle_after = machine_cpu()
    client = time.process_time() - client_before
    pg_after = postgres_cpu(platform)
    spans = sum(len(b) for b in bodies) * TRACES * (STEPS + 1)
    per_k = 1000 / spans
    figures = {
        "spans_s": spans / seconds,
        "web": sum(w.cpu_seconds() - b for w, b in zip(webs, web_before, strict=True)) * per_k,
        "postgres": sum(pg_after[p] - pg_before.get(p, 0.0) for p in pg_after) * per_k,
        "s3": (cpu_of(platform.procs[0].pid) - s3_before) * per_k,
        "clients": client * per_k,
    }
    # Cores in use during the round: CPU seconds per 1,000 spans x spans/s / 1,000.
    to_cores = figures["spans_s"] / 1000
    ours = figures["web"] + figures["postgres"] + figures["s3"] + figures["clients"]
    figures |= {
        "web_cores": figures["web"] * to_cores / len(webs),
        "our_cores": ours * to_cores,
        "other_cores": max(0.0, (busy_after - busy_before) / seconds - ours * to_cores),
        "idle_cores": (idle_after - idle_before) / seconds,
        "load": loadavg(),
    }
    return figures


def ingest(platform: Platform, env: dict) -> int:
    """Prints the ingest figures; returns how many spans were sent."""
    from controlplane.loopback import start_web
    from tracing import otlpload

    key = platform.key
    webs = [start_web(name=f"web{n}", env=env, log_path=LOGS / f"web{n}.log") for n in (1, 2)]
    try:
        rounds = {1: [], 2: []}
        seed = 0
        warm = [
            [
                otlpload.encode(b)
                for b in otlpload.batches(count=4, traces=TRACES, steps=STEPS, seed=99)
            ]
        ]
        otlpload.post_bodies([f"http://127.0.0.1:{w.port}" for w in webs], key, warm * 2)
        sent = 2 * len(warm[0]) * TRACES * (STEPS + 1)
        for r in range(ROUNDS):
            for count in (1, 2) if r % 2 == 0 else (2, 1):
                seed += 2
                bodies = [
                    [
                        otlpload.encode(b)
                        for b in otlpload.batches(
                            count=BATCHES, traces=TRACES, steps=STEPS, seed=seed + c
                        )
                    ]
                    for c in (0, 1)
                ]
                rounds[count].append(ingest_round(webs[:count], key, bodies, platform))
                sent += 2 * BATCHES * TRACES * (STEPS + 1)
        for count in (1, 2):
            med = {
                k: statistics.median(r[k] for r in rounds[count])
                for k in rounds[count][0]
                if k != "load"
            }
            loads = "; ".join(r["load"] for r in rounds[count])
            print(
                f"OTLP ingest, {count} web process(es), 2 clients of {CONNECTIONS} connection(s): "
                f"{med['spans_s']:.0f} spans/s "
                f"(median of {ROUNDS}; {loads})"
            )
            print(
                f"  CPU s per 1,000 spans: web {med['web']:.2f}, PostgreSQL {med['postgres']:.2f}, "
                f"S3 (moto) {med['s3']:.2f}, clients {med['clients']:.2f}"
            )
            print(
                f"  cores busy: each web process {med['web_cores']:.2f} (of the 1 its GIL "
                f"allows), this bench's processes {med['our_cores']:.2f}, other processes on "
                f"the machine {med['other_cores']:.2f}, idle {med['idle_cores']:.2f} "
                f"(of {os.cpu_count()})"
            )
        ratios = [b["spans_s"] / a["spans_s"] for a, b in zip(rounds[1], rounds[2], strict=True)]
        print(
            f"scaling 1 -> 2 web processes: {statistics.median(ratios):.2f}x "
            f"(target >= 1.4x; rounds {', '.join(f'{x:.2f}' for x in ratios)}; {loadavg()})"
        )
        explain_scaling(rounds)
        return sent
    finally:
        for web in webs:
            web.stop()


def small_requests(platform: Platform, env: dict) -> None:
    """Web CPU per request of 2 spans against per request of 60, on one web process,
    interleaved: what a request costs whatever it carries (authentication, the stored-span
    check, the transaction, the follow-up's messages), which decides the web's CPU where
    exporters flush every second with a span or two (docs/capacity.md, research agents)."""
    from controlplane.loopback import start_web
    from tracing import otlpload

    web = start_web(name="web-small", env=env, log_path=LOGS / "web-small.log")
    url = f"http://127.0.0.1:{web.port}"
    shapes = {2: (1, 1, 120), 60: (10, 5, 12)}  # spans a request: traces, steps, requests
    costs = {2: [], 60: []}
    pg_costs = {2: [], 60: []}
    try:
        warm = [otlpload.encode(b) for b in otlpload.batches(count=4, traces=1, steps=1, seed=7)]
        otlpload.post_bodies([url], platform.key, [warm])
        for r in range(ROUNDS):
            for size in (2, 60) if r % 2 == 0 else (60, 2):
                traces, steps, count = shapes[size]
                batches = otlpload.batches(
                    count=count, traces=traces, steps=steps, seed=500 + 100 * r + size
                )
                bodies = [otlpload.encode(b) for b in batches]
                before, pg_before = web.cpu_seconds(), postgres_cpu(platform)
                otlpload.post_bodies([url], platform.key, [bodies])
                costs[size].append(((web.cpu_seconds() - before) / count * 1000, loadavg()))
                pg_after = postgres_cpu(platform)
                pg = sum(pg_after[p] - pg_before.get(p, 0.0) for p in pg_after)
                pg_costs[size].append(pg / count * 1000)
    finally:
        web.stop()
    per = {size: statistics.median(ms for ms, _ in costs[size]) for size in costs}
    fixed = (per[2] * 60 - per[60] * 2) / 58  # a + 2b = per[2], a + 60b = per[60]
    for size in (2, 60):
        loads = "; ".join(load for _, load in costs[size])
        print(
            f"web CPU per request of {size} spans: {per[size]:.1f} ms, {per[size] / size:.2f} ms "
            f"a span (median of {ROUNDS}; {loads}); PostgreSQL's "
            f"{statistics.median(pg_costs[size]):.1f} ms"
        )
    print(f"  so a request costs about {fixed:.1f} ms of web CPU whatever it carries")


def explain_scaling(rounds: dict[int, list[dict]]) -> None:
    """Prints the ratio this machine allows, from the CPU each process kind took: one
    web process runs Python under one GIL, so it can use one core at most; two of them
    share the cores with PostgreSQL, moto and the clients, which a deployment runs
    elsewhere."""
    cores = os.cpu_count()
    web_1 = statistics.median(r["web"] for r in rounds[1])
    path_2 = statistics.median(r["web"] + r["postgres"] + r["s3"] + r["clients"] for r in rounds[2])
    one, two = 1000 / web_1, 1000 * cores / path_2
    others = statistics.median(r["other_cores"] for r in rounds[2])
    print(
        f"  why: 1 web process <= 1000 / {web_1:.2f} = {one:.0f} spans/s (one core); 2 share "
        f"the {cores} cores with PostgreSQL, moto and the clients: <= {cores} x 1000 / "
        f"{path_2:.2f} (the whole path) = {two:.0f} spans/s; so this machine allows at most "
        f"{min(cores, two / one):.2f}x with nothing else running, and other processes took "
        f"{others:.2f} of its {cores} cores during the 2-process rounds"
    )
    if others > 0.25:
        # The kernel shares busy cores out among runnable threads, not among benches.
        print(
            "  with other processes busy, 2 web processes win a larger share of the cores "
            "from them than 1 does: the measured ratio then says how the cores were shared, "
            "and the bound above is the platform's own"
        )


def followup(platform: Platform, env: dict, spans: int) -> None:
    """Drains what ingest queued for later with one worker and prints its cost per span."""
    import redis

    from controlplane.loopback import start_worker, wait_until

    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    queue = env["SEARCH_INDEX_QUEUE"]
    queued = broker.llen(queue)
    # A worker's start (imports, Django setup) is not per-span work: measured on an idle
    # queue and taken off.
    idle = start_worker(
        name=f"{TAG}-idle",
        queues=[f"{TAG}-idle"],
        concurrency=2,
        env=env,
        log_path=LOGS / "idle.log",
    )
    time.sleep(1)
    startup = idle.cpu_seconds()
    idle.stop()
    pg_before = cluster_cpu(platform)
    started = time.perf_counter()
    worker = start_worker(
        name=f"{TAG}-later",
        queues=[queue],
        concurrency=2,
        env=env,
        log_path=LOGS / "later.log",
    )
    try:
        wait_until(lambda: broker.llen(queue) == 0, timeout=1800, what="follow-up not drained")
        last = -1.0
        while (cpu := worker.cpu_seconds()) != last:  # the last tasks taken finish
            last = cpu
            time.sleep(1)
        elapsed = time.perf_counter() - started - 1
        per_k = 1000 / spans
        work = (cpu - startup) * per_k
        # A task's connection closes when it ends, taking its backend's figures with it.
        pg = (cluster_cpu(platform) - pg_before) * per_k
        print(
            f"follow-up (index, cost, alerts) of {spans} spans, {queued} tasks, one worker of "
            f"2 pool processes: {spans / elapsed:.0f} spans/s ({loadavg()})"
        )
        print(
            f"  CPU s per 1,000 spans: worker {work:.2f}, "
            f"PostgreSQL (the whole server: quiet machine only) {pg:.2f}"
        )
    finally:
        worker.stop()


LAYOUTS = (  # (label, workers, pool, slots per worker)
    ("1 worker, prefork pool of 2", 1, None, 2),
    ("2 workers, prefork pool of 2 each", 2, None, 2),
    ("1 worker, threads pool of 4", 1, "threads", 4),
)


def runs(env: dict) -> None:
    import django

    django.setup()
    from django.conf import settings

    from controlplane.loopback import start_worker
    from controlplane.models import Tenant
    from controlplane.services import Actor
    from controlplane.tenancy import tenant_scope
    from execution import services
    from execution.models import Run
    from execution.sandbox import backend_class
    from execution.testing import agent_with_bundle

    tenant = Tenant.objects.get(slug="bench")
    agent = agent_with_bundle(tenant, name="noop", code="def main(ctx, input):\n    return None\n")
    queue = env["EXECUTION_QUEUE"]

    def batch(n: int, workers) -> dict:
        with tenant_scope(tenant):
            peak = 0.0
            busy_before, _ = machine_cpu()
            cpu_before = sum(w.cpu_seconds_with_reaped() for w in workers)
            started = time.perf_counter()
            ids = [
                services.run_create(
                    tenant=tenant,
                    agent=agent,
                    version=None,
                    input=None,
                    limits=None,
                    actor=Actor.system(),
                ).pk
                for _ in range(n)
            ]
            done = Run.objects.filter(pk__in=ids, finished_at__isnull=False)
            while done.count() < n:
                # The workers with the sandboxes of the runs under way.
                peak = max(peak, sum(w.pss_mb() for w in workers))
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = sum(w.cpu_seconds_with_reaped() for w in workers) - cpu_before
            busy_after, _ = machine_cpu()
            failed = Run.objects.filter(pk__in=ids).exclude(status="succeeded").count()
            assert failed == 0, f"{failed} no-op runs did not succeed"
        return {
            "runs_s": n / elapsed,
            "cpu_per_run": cpu / n,
            "other_cores": max(0.0, (busy_after - busy_before - cpu) / elapsed),
            "peak_mb": peak,
            "load": loadavg(),
        }

    rates = {layout: [] for layout in LAYOUTS}
    for r in range(ROUNDS):
        for layout in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
            _, count, pool, slots = layout
            # Fresh workers per measurement: a worker merely paused would still hold
            # the message its pending fetch had taken.
            workers = [
                start_worker(
                    name=f"{TAG}-w{n}",
                    queues=[queue],
                    concurrency=slots,
                    env=env,
                    log_path=LOGS / f"worker{n}.log",
                    pool=pool,
                )
                for n in range(count)
            ]
            try:
                batch(count * slots, workers)  # up and warm
                rates[layout].append(batch(RUNS, workers))
            finally:
                for w in workers:
                    w.stop()
    print(
        f"runs/s, no-op agent ({backend_class(settings.EXECUTION_SANDBOX).name} sandbox), {RUNS} runs queued at once:"
    )
    for layout in LAYOUTS:
        label, count, _, slots = layout
        med = {
            k: statistics.median(x[k] for x in rates[layout])
            for k in rates[layout][0]
            if k != "load"
        }
        loads = "; ".join(x["load"] for x in rates[layout])
        print(
            f"  {label}: {med['runs_s']:.1f} runs/s (median of {ROUNDS}; {loads})\n"
            f"    CPU s per run of the worker(s) with their sandboxes {med['cpu_per_run']:.2f}; "
            f"other processes on the machine {med['other_cores']:.2f} cores; "
            f"peak PSS of the worker(s) with their sandboxes {med['peak_mb']:.0f} MB, "
            f"{med['peak_mb'] / (count * slots):.0f} MB per slot"
        )
    one, two = LAYOUTS[0], LAYOUTS[1]
    ratio = statistics.median(
        b["runs_s"] / a["runs_s"] for a, b in zip(rates[one], rates[two], strict=True)
    )
    cpu = statistics.median(x["cpu_per_run"] for x in rates[two])
    others = statistics.median(x["other_cores"] for x in rates[two])
    print(
        f"scaling 1 -> 2 workers: {ratio:.2f}x. A no-op run is all overhead (sandbox start, "
        f"bundle, journal, outcome), {cpu:.2f} CPU s of its worker each, so {os.cpu_count()} "
        f"cores allow at most {os.cpu_count() / cpu:.1f} runs/s however many slots wait: a "
        f"second worker adds slots (runs at once), and speed only while cores are idle; other "
        f"processes took {others:.2f} of the {os.cpu_count()} cores during the 2-worker rounds. "
        f"A real run waits on its LLM and tools, so slots, and the memory per slot, bound "
        f"it first"
    )


def main() -> None:
    LOGS.mkdir()
    platform = Platform("postgres+s3")
    env = setup_env(platform)
    import redis

    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    parts = os.environ.get("BENCH_PARTS", "ingest,small,runs").split(",")
    try:
        if "ingest" in parts:
            followup(platform, env, ingest(platform, env))
        if "small" in parts:
            small_requests(platform, env)
        if "runs" in parts:
            runs(env)
    finally:
        broker.delete(f"{TAG}-later", f"{TAG}-runs")
        platform.stop()


if __name__ == "__main__":
    main()
