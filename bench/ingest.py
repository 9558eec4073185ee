"""Ingest throughput and storage: agent traces over OTLP/HTTP into a running server.

Each trace: one invoke_agent root, then per step a chat span resending the whole
conversation so far (system prompt, user task, every assistant turn and tool result)
and an execute_tool span. Requests are OTLP protobuf batches of about 512 spans, sent
by one client over keep-alive connections to gunicorn, with a Celery worker building
the search index as `make run` has one. The text is English prose and Python source
from the standard library (bench/corpus.py), not a vocabulary tuned to the compressor.

Two rates, both from the first POST: until every span can be read back from the
database, and until the last span of every request is found by full-text search (the
API). Warm-up goes to another tenant, so the measured one starts fresh. Storage is the
growth of every table (indexes and FTS5 tables included; SQLite checkpointed, its free
pages and WAL counted) plus the blob store, against the raw OTLP bytes sent, with each
table's share printed.

Targets (2 cores, client and server together): >= 5,000 spans/s stored and >= 3,000
spans/s searchable on the embedded default at 10 steps; stored/raw <= 1/7 at 10 steps
and <= 1/25 at 40 steps.
"""

import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import corpus  # noqa: E402
from bench.common import Platform  # noqa: E402

RNG = random.Random(7)
TOOLS = ["search_docs", "read_file", "run_query", "lookup_order", "http_get"]
CODE_TOOLS = {"read_file", "run_query"}  # their results are source code, the others prose
BATCH_SPANS = 512


def prose(words: int) -> str:
    return corpus.prose(RNG, words)


SYSTEM = prose(260)  # ~1.5 KB, the same for every trace of this agent


def kv(key: str, value) -> KeyValue:
    item = KeyValue(key=key)
    if isinstance(value, bool):
        item.value.bool_value = value
    elif isinstance(value, int):
        item.value.int_value = value
    else:
        item.value.string_value = value
    return item


def trace_spans(steps: int, t0: int) -> list[dict]:
    """One agent trace as plain span dicts (ids, times, attributes)."""
    trace_id = RNG.randbytes(16)
    root = RNG.randbytes(8)
    session = f"session-{RNG.randrange(10**9)}"
    conversation = [{"role": "user", "parts": [{"type": "text", "content": prose(45)}]}]
    spans = []
    now = t0
    for step in range(steps):
        call_id = f"toolu_{RNG.randrange(10**12):012d}"
        tool = RNG.choice(TOOLS)
        args = {"query": prose(6), "limit": RNG.randint(1, 20)}
        reply = {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": prose(40)},
                {"type": "tool_call", "id": call_id, "name": tool, "arguments": args},
            ],
        }
        spans.append(
            {
                "trace_id": trace_id,
                "span_id": RNG.randbytes(8),
                "parent": root,
                "name": "chat claude-sonnet-4",
                "start": now,
                "end": now + 900_000_000,
                "attrs": [
                    ("gen_ai.operation.name", "chat"),
                    ("gen_ai.provider.name", "anthropic"),
                    ("gen_ai.request.model", "claude-sonnet-4"),
                    ("gen_ai.response.model", "claude-sonnet-4-20250514"),
                    ("gen_ai.usage.input_tokens", 400 + 300 * step),
                    ("gen_ai.usage.output_tokens", 80),
                    ("gen_ai.conversation.id", session),
                    (
                        "gen_ai.system_instructions",
                        json.dumps([{"type": "text", "content": SYSTEM}]),
                    ),
                    ("gen_ai.input.messages", json.dumps(conversation)),
                    ("gen_ai.output.messages", json.dumps([reply])),
                    ("gen_ai.response.finish_reasons", "tool_use"),
                ],
            }
        )
        now += 900_000_000
        # Search hits and pages as prose, file contents and query rows as code.
        if tool in CODE_TOOLS:
            result = corpus.code(RNG, RNG.randint(20, 60))
        else:
            result = prose(RNG.randint(150, 450))
        spans.append(
            {
                "trace_id": trace_id,
                "span_id": RNG.randbytes(8),
                "parent": root,
                "name": f"execute_tool {tool}",
                "start": now,
                "end": now + 200_000_000,
                "attrs": [
                    ("gen_ai.operation.name", "execute_tool"),
                    ("gen_ai.tool.name", tool),
                    ("gen_ai.tool.call.id", call_id),
                    ("gen_ai.tool.call.arguments", json.dumps(args)),
                    ("gen_ai.tool.call.result", result),
                ],
            }
        )
        now += 200_000_000
        conversation += [
            reply,
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": call_id, "response": result}],
            },
        ]
    spans.insert(
        0,
        {
            "trace_id": trace_id,
            "span_id": root,
            "parent": b"",
            "name": "invoke_agent support",
            "start": t0,
            "end": now,
            "attrs": [
                ("gen_ai.operation.name", "invoke_agent"),
                ("gen_ai.agent.name", "support"),
                ("gen_ai.conversation.id", session),
            ],
        },
    )
    return spans


def requests_for(traces: int, steps: int, tag: str = "") -> tuple[list[bytes], int, list[str]]:
    """OTLP bodies of `traces` agent traces, their span count, and one marker word a
    body, placed in its last tool result: once every marker is found by full-text
    search, the whole load is searchable."""
    t0 = time.time_ns()
    spans = [s for i in range(traces) for s in trace_spans(steps, t0 + i * 1_000_000)]
    bodies, markers = [], []
    for start in range(0, len(spans), BATCH_SPANS):
        batch = spans[start : start + BATCH_SPANS]
        marker = f"fdbench{tag}q{len(bodies)}z{RNG.randrange(10**9)}"
        tools = [s for s in batch if s["name"].startswith("execute_tool")]
        if tools:
            attrs = tools[-1]["attrs"]
            key, result = attrs[-1]
            attrs[-1] = (key, f"{result}\n{marker}")
            markers.append(marker)
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(
            [kv("service.name", "support-agent"), kv("telemetry.sdk.language", "python")]
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "agent.instrumentation"
        for s in batch:
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
        bodies.append(request.SerializeToString())
    return bodies, len(spans), markers


def wait_searchable(client: httpx.Client, key: str, markers: list[str], timeout=600) -> None:
    """Until full-text search (the API, as a user asks it) finds every marker."""
    deadline = time.monotonic() + timeout
    pending = list(markers)
    while pending:
        resp = client.get(
            "/api/v1/traces", params={"q": pending[0]}, headers={"Authorization": f"Bearer {key}"}
        )
        resp.raise_for_status()
        if resp.json()["items"]:
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} markers not searchable after {timeout} s")
        time.sleep(0.02)


def run(kind: str, traces: int, steps: int) -> dict:
    platform = Platform(kind)
    try:
        platform.serve()
        platform.worker()
        bodies, total, markers = requests_for(traces, steps)
        raw = sum(len(b) for b in bodies)
        warm_key = platform.create_tenant("warm")
        with httpx.Client(base_url=platform.url, timeout=120) as client:
            # Warm up each web worker and the Celery worker (connections, imports, caches)
            # with another tenant's traces, so the measured tenant starts fresh: its
            # dictionaries and its agent's system prompt are stored within the measurement.
            warm_markers = []
            for i in range(6):
                warm, _, marks = requests_for(1, 2, tag=f"w{i}")
                warm_markers += marks
                client.post(
                    "/v1/traces", content=warm[0], headers=_headers(warm_key)
                ).raise_for_status()
            wait_searchable(client, warm_key, warm_markers)
            load_before = os.getloadavg()[0]
            stored_before = platform.sql("SELECT COUNT(*) FROM tracing_span")[0][0]
            tables_before, blobs_before = platform.stored_by_table(), platform.blob_bytes()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                send = lambda body: client.post(  # noqa: E731
                    "/v1/traces", content=body, headers=_headers(platform.key)
                )
                for resp in pool.map(send, bodies):
                    resp.raise_for_status()
            # 2xx means durably stored; count until every span can be read back anyway.
            while platform.sql("SELECT COUNT(*) FROM tracing_span")[0][0] < stored_before + total:
                time.sleep(0.01)
            until_stored = time.perf_counter() - started
            wait_searchable(client, platform.key, markers)
            until_searchable = time.perf_counter() - started
        tables = platform.stored_by_table()
        growth = {
            name: size - tables_before.get(name, 0)
            for name, size in tables.items()
            if size != tables_before.get(name, 0)
        }
        growth["(blob store)"] = platform.blob_bytes() - blobs_before
        stored = sum(growth.values())
        return {
            "kind": kind,
            "traces": traces,
            "steps": steps,
            "spans": total,
            "stored_per_s": total / until_stored,
            "searchable_per_s": total / until_searchable,
            "raw_bytes": raw,
            "stored_bytes": stored,
            "stored_per_span": stored / total,
            "ratio": stored / raw,
            "growth": growth,
            "load": (load_before, os.getloadavg()[0]),
        }
    finally:
        platform.stop()


def _headers(key: str) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}


def _shares(growth: dict[str, int]) -> str:
    """Each table's share of the growth, largest first (tables under 1% left out)."""
    total = sum(growth.values()) or 1
    parts = [
        f"{name} {size / total:.0%} ({size / 1e6:.2f} MB)"
        for name, size in sorted(growth.items(), key=lambda item: -item[1])
        if size / total >= 0.01
    ]
    return "    " + "\n    ".join(parts)


def main() -> None:
    kinds = os.environ.get("BENCH_KINDS", "embedded,postgres+s3").split(",")
    # Each figure is the median of several runs, each on a fresh platform: a tenant's
    # first batches train its dictionaries, and which batch does it varies run to run.
    repeat = int(os.environ.get("BENCH_REPEAT", 3))
    print(f"median of {repeat} runs each (range in brackets); spans/s from the first POST")
    print(
        f"{'store':<12} {'shape':>9} {'spans':>6} {'stored/s':>9} {'search/s':>9} "
        f"{'B/span':>7} {'stored/raw':>11}  target"
    )
    for kind in kinds:
        shapes = ((200, 10, 1 / 7), (50, 40, 1 / 25))
        if os.environ.get("BENCH_SHAPES") == "10":
            shapes = shapes[:1]
        for traces, steps, target in shapes:
            runs = [run(kind, traces, steps) for _ in range(repeat)]
            stored_rates = sorted(r["stored_per_s"] for r in runs)
            rates = sorted(r["searchable_per_s"] for r in runs)
            ratios = sorted(r["ratio"] for r in runs)
            r = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
            rate_target = (
                " (stored >= 5000/s, searchable >= 3000/s)"
                if kind == "embedded" and steps == 10
                else ""
            )
            print(
                f"{kind:<12} {traces:>4}x{steps:<4} {r['spans']:>6} "
                f"{statistics.median(stored_rates):>9.0f} {statistics.median(rates):>9.0f} "
                f"{r['stored_per_span']:>7.0f} {statistics.median(ratios):>11.4f}  "
                f"<= {target:.4f}{rate_target}\n"
                f"    [stored/s {stored_rates[0]:.0f}-{stored_rates[-1]:.0f}, searchable/s "
                f"{rates[0]:.0f}-{rates[-1]:.0f}, stored/raw {ratios[0]:.4f}-{ratios[-1]:.4f}; "
                f"raw {r['raw_bytes'] / 1e6:.1f} MB, stored {r['stored_bytes'] / 1e6:.2f} MB; "
                f"load average {', '.join(f'{a:.1f}-{b:.1f}' for a, b in (x['load'] for x in runs))}"
                f" (1 min, before-after each run); by table, median run:]"
            )
            print(_shares(r["growth"]), flush=True)


if __name__ == "__main__":
    main()
