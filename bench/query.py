"""Query latency: trace search, full-text search and a 2,000-span trace, with 100,000
spans stored.

Loads agent traces (bench/ingest.py's generator: a conversation resent every step, tool
results of a few hundred words of prose or code from Python's standard library, each
trace its own text) over OTLP/HTTP into a fresh platform, lets a real Celery
worker build the search index off the ingest path, adds one 2,000-span trace and one
40-step agent trace, then
times requests from one client on the same 2-core machine:

- a filtered trace list (service, status, model, agent, duration, attribute filters),
- a full-text search (common and rare words, two-word queries),
- the 2,000-span trace through the API and as the rendered page,
- the last chat span of a 40-step agent trace, its 79-message input put back together.

Targets (both backends): trace list p50 < 50 ms; full text p50 < 100 ms; 2,000-span
trace view p50 < 100 ms. Each figure is printed with the load average it was taken at.
Set BENCH_KINDS=embedded,postgres+s3 to run SQLite too; BENCH_SPANS to change the load.
"""

import os
import random
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import corpus  # noqa: E402
from bench.common import Platform, manage  # noqa: E402
from bench.ingest import kv, trace_spans  # noqa: E402

SERVICES = ["support-agent", "billing-agent", "research-agent"]
STEPS = 10  # 21 spans a trace
RUNS = 60
RNG = random.Random(11)


def _body(spans: list[dict], service: str) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(
        [kv("service.name", service), kv("deployment.environment", "prod")]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "agent.instrumentation"
    for s in spans:
        span = ss.spans.add(
            trace_id=s["trace_id"],
            span_id=s["span_id"],
            parent_span_id=s["parent"],
            name=s["name"],
            kind=3,
            start_time_unix_nano=s["start"],
            end_time_unix_nano=s["end"],
        )
        span.attributes.extend(kv(k, v) for k, v in s["attrs"])
        if s.get("error"):
            span.status.code = 2
            span.status.message = s["error"]
    return request.SerializeToString()


def _varied(template: list[dict], t0: int, index: int) -> list[dict]:
    """A generated trace under new ids, start time, session, agent and model."""
    trace_id = RNG.randbytes(16)
    ids = {s["span_id"]: RNG.randbytes(8) for s in template}
    shift = t0 - template[0]["start"]
    session = f"session-{index // 3}"  # three traces a session
    model = "claude-sonnet-4" if index % 4 else "claude-haiku-4"
    error = index % 20 == 0  # 5% of traces fail in a tool
    out = []
    for s in template:
        attrs = []
        for k, v in s["attrs"]:
            if k == "gen_ai.conversation.id":
                v = session
            elif k == "gen_ai.request.model":
                v = model
            elif k == "gen_ai.agent.name":
                v = ["support", "billing", "research"][index % 3]
            attrs.append((k, v))
        attrs.append(("customer.tier", ["free", "pro", "enterprise"][index % 3]))
        span = {
            **s,
            "trace_id": trace_id,
            "span_id": ids[s["span_id"]],
            "parent": ids.get(s["parent"], b""),
            "start": s["start"] + shift,
            "end": s["end"] + shift,
            "attrs": attrs,
        }
        if error and s["name"].startswith("execute_tool"):
            span["error"] = f"tool timed out after 30 s (request {RNG.randrange(10**6)})"
            error = False
        out.append(span)
    return out


def load(platform: Platform, spans_wanted: int) -> tuple[int, int]:
    """Send about spans_wanted spans of agent traces; returns (traces, spans)."""
    per_trace = 2 * STEPS + 1
    traces = spans_wanted // per_trace
    now = time.time_ns()
    headers = {"Authorization": f"Bearer {platform.key}", "Content-Type": "application/x-protobuf"}

    def bodies():
        # ~500 spans a request, as an exporter batches them; one service a request.
        batches: dict[str, list[dict]] = {service: [] for service in SERVICES}
        for i in range(traces):
            # Spread over the last 30 days, newest last.
            t0 = now - int((traces - i) * (30 * 86400 / traces) * 1e9)
            service = SERVICES[i % 3]
            # Each trace its own text: full-text search runs over as many distinct
            # texts as a real tenant's 100,000 spans hold.
            batches[service] += _varied(trace_spans(STEPS, 0), t0, i)
            if len(batches[service]) >= 500:
                yield _body(batches[service], service)
                batches[service] = []
        for service, spans in batches.items():
            if spans:
                yield _body(spans, service)

    sent = 0
    with httpx.Client(base_url=platform.url, timeout=120) as client, ThreadPoolExecutor(2) as pool:
        for resp in pool.map(
            lambda b: client.post("/v1/traces", content=b, headers=headers), bodies()
        ):
            resp.raise_for_status()
            sent += 1
    return traces, traces * per_trace


def big_trace(platform: Platform) -> str:
    """One trace of 2,001 spans: a root, 100 steps, 19 chat and tool spans in each."""
    trace_id = RNG.randbytes(16)
    root = RNG.randbytes(8)
    t0 = time.time_ns() - 3_600 * 10**9
    spans = [
        {
            "trace_id": trace_id,
            "span_id": root,
            "parent": b"",
            "name": "invoke_agent crawler",
            "start": t0,
            "end": t0 + 100 * 10**9,
            "attrs": [("gen_ai.operation.name", "invoke_agent"), ("gen_ai.agent.name", "crawler")],
        }
    ]
    for step in range(100):
        sid = RNG.randbytes(8)
        s0 = t0 + step * 10**9
        spans.append(
            {
                "trace_id": trace_id,
                "span_id": sid,
                "parent": root,
                "name": f"step {step}",
                "start": s0,
                "end": s0 + 10**9,
                "attrs": [],
            }
        )
        for i in range(19):
            chat = i % 2 == 0
            attrs = [("gen_ai.operation.name", "chat" if chat else "execute_tool")]
            if chat:
                attrs += [
                    ("gen_ai.request.model", "claude-sonnet-4"),
                    ("gen_ai.usage.input_tokens", 900),
                    ("gen_ai.usage.output_tokens", 60),
                ]
            else:
                attrs += [
                    ("gen_ai.tool.name", "fetch_page"),
                    ("gen_ai.tool.call.result", f"page {step}.{i}"),
                ]
            spans.append(
                {
                    "trace_id": trace_id,
                    "span_id": RNG.randbytes(8),
                    "parent": sid,
                    "name": "chat claude-sonnet-4" if chat else "execute_tool fetch_page",
                    "start": s0 + i * 50_000_000,
                    "end": s0 + (i + 1) * 50_000_000,
                    "attrs": attrs,
                }
            )
    headers = {"Authorization": f"Bearer {platform.key}", "Content-Type": "application/x-protobuf"}
    for start in range(0, len(spans), 512):
        httpx.post(
            f"{platform.url}/v1/traces",
            content=_body(spans[start : start + 512], "crawler"),
            headers=headers,
            timeout=60,
        ).raise_for_status()
    return trace_id.hex()


def long_conversation(platform: Platform) -> tuple[str, str]:
    """One 40-step agent trace in one request; returns its trace id and last chat span id
    (whose input is the whole conversation, 79 messages)."""
    spans = trace_spans(40, time.time_ns() - 1_800 * 10**9)
    headers = {"Authorization": f"Bearer {platform.key}", "Content-Type": "application/x-protobuf"}
    httpx.post(
        f"{platform.url}/v1/traces",
        content=_body(spans, "support-agent"),
        headers=headers,
        timeout=60,
    ).raise_for_status()
    last_chat = [s for s in spans if s["name"].startswith("chat")][-1]
    return spans[0]["trace_id"].hex(), last_chat["span_id"].hex()


def wait_indexed(platform: Platform, ui: httpx.Client, traces: int, timeout: float = 1800) -> float:
    """Until an attribute every trace carries finds them all (the attribute filter reads
    the search index the worker builds, on either backend) and the queue is empty."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = ui.get("/t/bench/traces/counts", params={"attr": "deployment.environment=prod"})
        counts.raise_for_status()
        done = int(re.search(r"<strong>(\d+)</strong> trace", counts.text).group(1))
        if done >= traces:
            queue = Path(platform.var) / "celery" / "queue"
            if not queue.exists() or not any(queue.iterdir()):
                return time.perf_counter() - started
        time.sleep(1)
    raise RuntimeError(f"the search index did not catch up within {timeout} s")


def log_in(platform: Platform) -> httpx.Client:
    manage(
        platform.env,
        "shell",
        "-c",
        (
            "from django.contrib.auth import get_user_model; from controlplane.models import Tenant, Membership; "
            "u = get_user_model().objects.create_user('bench@bench.local', 'bench@bench.local', 'bench-password-1'); "
            "Membership.all_tenants.create(tenant=Tenant.objects.get(slug='bench'), user=u, role='owner')"
        ),
    )
    client = httpx.Client(base_url=platform.url, timeout=60)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    resp = client.post(
        "/login/",
        data={
            "username": "bench@bench.local",
            "password": "bench-password-1",
            "csrfmiddlewaretoken": token,
        },
    )
    assert resp.status_code == 302, resp.text[:500]
    return client


def timed(fn, runs: int = RUNS) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, the 1-minute load average when the samples were taken)."""
    for _ in range(3):
        fn(0)  # warm caches and connections
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], os.getloadavg()[0]


def run(kind: str, spans_wanted: int) -> list[tuple]:
    platform = Platform(kind)
    try:
        platform.serve()
        platform.worker()
        t = time.perf_counter()
        traces, spans = load(platform, spans_wanted)
        big = big_trace(platform)
        talk_trace, talk_span = long_conversation(platform)
        loaded = time.perf_counter() - t
        ui = log_in(platform)
        indexed = wait_indexed(platform, ui, traces + 2)
        print(
            f"[{kind}] loaded {spans + 2001 + 81:,} spans in {traces + 2:,} traces in {loaded:.0f} s; "
            f"search index caught up {indexed:.0f} s after the last span"
        )
        if kind == "postgres+s3":
            import psycopg

            # Fresh tables: give the planner statistics, as autovacuum would in a while.
            url = platform.env["DATABASE_URL"].replace("postgres://", "postgresql://")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        api = httpx.Client(
            base_url=platform.url, timeout=60, headers={"Authorization": f"Bearer {platform.key}"}
        )
        filters = [
            {"service": "billing-agent", "status": "error"},
            {"model": "claude-haiku-4"},
            {"agent": "research", "min_duration_ms": "5000"},
            {"attr": "customer.tier=enterprise", "since": "7d"},
            {"status": "error", "since": "24h"},
            {"session_id": "session-42"},
        ]
        words = ["order", "result service", *corpus.rare_words(RNG, 20), "timed out"]

        def get(path, params=None, client=api):
            resp = client.get(path, params=params)
            resp.raise_for_status()
            return resp

        rows = [
            (
                "trace list, filtered (API)",
                timed(lambda i: get("/api/v1/traces", filters[i % len(filters)])),
                50,
            ),
            (
                "trace list, filtered (page)",
                timed(lambda i: get("/t/bench/traces/", filters[i % len(filters)], ui)),
                None,
            ),
            (
                "full-text search (API)",
                timed(lambda i: get("/api/v1/traces", {"q": words[i % len(words)]})),
                100,
            ),
            ("2,000-span trace (API)", timed(lambda i: get(f"/api/v1/traces/{big}"), 30), 100),
            (
                "2,000-span trace (page)",
                timed(lambda i: get(f"/t/bench/traces/{big}/", None, ui), 30),
                100,
            ),
            (
                "span, 79-message input (API)",
                timed(lambda i: get(f"/api/v1/spans/{talk_span}", {"trace_id": talk_trace}), 30),
                None,
            ),
        ]
        talk = get(f"/api/v1/spans/{talk_span}", {"trace_id": talk_trace}).json()
        assert len(talk["input_messages"]) == 79, len(talk["input_messages"])
        check = get(f"/api/v1/traces/{big}").json()
        assert sum(1 + len(s["children"]) for s in check["spans"][0]["children"]) == 2000
        return [(kind, *row) for row in rows]
    finally:
        platform.stop()


def main() -> None:
    kinds = os.environ.get("BENCH_KINDS", "postgres+s3").split(",")
    spans = int(os.environ.get("BENCH_SPANS", "100000"))
    results = []
    for kind in kinds:
        results += run(kind, spans)
    print(f"\n{'store':<12} {'query':<30} {'p50 ms':>8} {'p95 ms':>8} {'load':>5}  target")
    for kind, name, (p50, p95, load_avg), target in results:
        goal = f"p50 < {target} ms" if target else ""
        verdict = ("met" if p50 < target else "MISSED") if goal else ""
        print(f"{kind:<12} {name:<30} {p50:>8.1f} {p95:>8.1f} {load_avg:>5.1f}  {goal} {verdict}")


if __name__ == "__main__":
    main()
