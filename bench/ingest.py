"""Ingest throughput and storage: agent traces over OTLP/HTTP into a running server.

Each trace: one invoke_agent root, then per step a chat span resending the whole
conversation so far (system prompt, user task, every assistant turn and tool result)
and an execute_tool span. Requests are OTLP protobuf batches of about 512 spans, sent
by one client over keep-alive connections. Throughput counts until every span can be
read back from the database. Storage is the growth of the tracing tables (with their
indexes) plus the blob store, against the raw OTLP bytes sent.

Targets (2 cores, client and server together): >= 5,000 spans/s into the embedded
default at 10 steps; stored/raw <= 1/7 at 10 steps and <= 1/25 at 40 steps.
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
from bench.common import Platform  # noqa: E402

RNG = random.Random(7)
# English-like text: common words drawn with Zipf's law, plus rarer made-up terms
# (names, identifiers), so compressors see what they see in real prompts and results.
COMMON = (
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by not word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light "
    "order file error result query user request response data value status service function"
).split()
RARE = [
    "".join(RNG.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(RNG.randint(4, 10)))
    for _ in range(2000)
]
WEIGHTS = [1 / (rank + 1) for rank in range(len(COMMON))]


def word() -> str:
    if RNG.random() < 0.15:
        return RNG.choice(RARE) if RNG.random() < 0.8 else str(RNG.randrange(10**6))
    return RNG.choices(COMMON, WEIGHTS)[0]


SYSTEM = None  # set below, once prose() exists
TOOLS = ["search_docs", "read_file", "run_query", "lookup_order", "http_get"]
BATCH_SPANS = 512


def prose(words: int) -> str:
    return " ".join(word() for _ in range(words))


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
        result = prose(RNG.randint(150, 450))  # search hits, file contents, query rows
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


def requests_for(traces: int, steps: int) -> list[bytes]:
    t0 = time.time_ns()
    spans = [s for i in range(traces) for s in trace_spans(steps, t0 + i * 1_000_000)]
    bodies = []
    for start in range(0, len(spans), BATCH_SPANS):
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(
            [kv("service.name", "support-agent"), kv("telemetry.sdk.language", "python")]
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "agent.instrumentation"
        for s in spans[start : start + BATCH_SPANS]:
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
    return bodies, len(spans)


def run(kind: str, traces: int, steps: int) -> dict:
    platform = Platform(kind)
    try:
        platform.serve()
        bodies, total = requests_for(traces, steps)
        raw = sum(len(b) for b in bodies)
        headers = {
            "Authorization": f"Bearer {platform.key}",
            "Content-Type": "application/x-protobuf",
        }
        with httpx.Client(base_url=platform.url, timeout=120) as client:
            # Warm up each worker (connections, caches, the agent's system prompt) with
            # a few small traces, as a server that has been up a while would be.
            for _ in range(6):
                warm, _ = requests_for(1, 2)
                client.post("/v1/traces", content=warm[0], headers=headers).raise_for_status()
            stored_before = platform.sql("SELECT COUNT(*) FROM tracing_span")[0][0]
            db_before, blobs_before = platform.database_bytes(), platform.blob_bytes()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                send = lambda body: client.post("/v1/traces", content=body, headers=headers)  # noqa: E731
                for resp in pool.map(send, bodies):
                    resp.raise_for_status()
            # 2xx means durably stored; count until every span can be read back anyway.
            while platform.sql("SELECT COUNT(*) FROM tracing_span")[0][0] < stored_before + total:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        stored = platform.database_bytes() - db_before + platform.blob_bytes() - blobs_before
        return {
            "kind": kind,
            "traces": traces,
            "steps": steps,
            "spans": total,
            "spans_per_s": total / elapsed,
            "raw_bytes": raw,
            "stored_bytes": stored,
            "stored_per_span": stored / total,
            "ratio": stored / raw,
        }
    finally:
        platform.stop()


def main() -> None:
    kinds = os.environ.get("BENCH_KINDS", "embedded,postgres+s3").split(",")
    # Each figure is the median of several runs, each on a fresh platform: a tenant's
    # first batches train its dictionaries, and which batch does it varies run to run.
    repeat = int(os.environ.get("BENCH_REPEAT", 3))
    print(f"median of {repeat} runs each (range in brackets)")
    print(
        f"{'store':<12} {'shape':>9} {'spans':>6} {'spans/s':>8} {'B/span':>8} {'stored/raw':>11}  target"
    )
    for kind in kinds:
        shapes = ((200, 10, 1 / 7), (50, 40, 1 / 25))
        if os.environ.get("BENCH_SHAPES") == "10":
            shapes = shapes[:1]
        for traces, steps, target in shapes:
            runs = [run(kind, traces, steps) for _ in range(repeat)]
            rates = sorted(r["spans_per_s"] for r in runs)
            ratios = sorted(r["ratio"] for r in runs)
            r = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
            rate_target = " (>= 5000 spans/s)" if kind == "embedded" and steps == 10 else ""
            print(
                f"{kind:<12} {traces:>4}x{steps:<4} {r['spans']:>6} {statistics.median(rates):>8.0f} "
                f"{r['stored_per_span']:>8.0f} {statistics.median(ratios):>11.4f}  <= {target:.4f}{rate_target}"
                f"  [spans/s {rates[0]:.0f}-{rates[-1]:.0f}, stored/raw {ratios[0]:.4f}-{ratios[-1]:.4f};"
                f" raw {r['raw_bytes'] / 1e6:.1f} MB, stored {r['stored_bytes'] / 1e6:.2f} MB]"
            )


if __name__ == "__main__":
    main()
