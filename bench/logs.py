"""Coding agents' log records into the platform (not part of CI): records/s through
`POST /v1/logs` on the embedded default and on PostgreSQL + S3, beside spans/s through
`POST /v1/traces` in the same run, and stored bytes per record.

Each store runs a fresh platform as `make run` (embedded) or platform/ (PostgreSQL)
starts it, with a Celery worker building the search index. Records are Claude Code
2.1.121 events as it sends them with prompt logging off (its default): sessions of
prompts, each an API request and a tool decision and result per step, the standard
attributes on every record. Rates are from the first POST until the last record's span
can be read (2xx already means stored); logs and traces rounds alternate, each round a
new tenant, so the two figures share the machine's load. Stored bytes are the database's
growth by table (indexes, WAL and, on SQLite, the FTS shadow tables included) plus the
blob store's, over one tenant's whole load, once the worker's queue has settled.

Target: at least as many log records/s as /v1/traces takes spans/s.
"""

import os
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
)

from bench.common import Platform  # noqa: E402
from bench.ingest import kv, requests_for  # noqa: E402

RNG = random.Random(19)
BATCH_RECORDS = 512  # the SDK's default max_export_batch_size
TOOLS = ["Read", "Edit", "Bash", "Grep", "Write"]
MODELS = ["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]


def session_records(t0: int, prompts: int, steps: int) -> list[tuple[str, int, dict]]:
    """(event, time, attributes) of one session, in the order Claude Code emits them."""
    session = str(uuid.UUID(int=RNG.getrandbits(128)))
    standard = {
        "session.id": session,
        "user.id": f"{RNG.getrandbits(256):064x}",
        "user.email": f"dev{RNG.randrange(40)}@acme.example",
        "user.account_uuid": str(uuid.UUID(int=RNG.getrandbits(128))),
        "organization.id": "9c0d1e2f-3a4b-5c6d-7e8f-9a0b1c2d3e4f",
        "terminal.type": RNG.choice(["vscode", "iTerm.app", "tmux"]),
        "app.version": "2.1.121",
    }
    out, now, sequence = [], t0, 0

    def emit(event: str, prompt: str, attrs: dict) -> None:
        nonlocal sequence
        stamp = datetime.fromtimestamp(now / 1e9, tz=UTC).isoformat()
        full = {**standard, "event.name": event, "event.timestamp": stamp,
                "event.sequence": sequence, "prompt.id": prompt, **attrs}  # fmt: skip
        out.append((f"claude_code.{event}", now, full))
        sequence += 1

    for _ in range(prompts):
        prompt = str(uuid.UUID(int=RNG.getrandbits(128)))
        emit("user_prompt", prompt, {"prompt_length": str(RNG.randrange(20, 400))})
        for _ in range(steps):
            duration = RNG.randrange(800, 9000)
            now += duration * 1_000_000
            emit("api_request", prompt, {
                "model": RNG.choice(MODELS), "cost_usd": f"{RNG.random() / 20:.6f}",
                "duration_ms": str(duration), "input_tokens": str(RNG.randrange(50, 4000)),
                "output_tokens": str(RNG.randrange(20, 1500)),
                "cache_read_tokens": str(RNG.randrange(0, 60000)),
                "cache_creation_tokens": str(RNG.randrange(0, 4000)),
                "request_id": f"req_{RNG.getrandbits(64):016x}", "speed": "normal",
                "query_source": "repl_main_thread",
            })  # fmt: skip
            tool, use = RNG.choice(TOOLS), f"toolu_{RNG.getrandbits(64):016x}"
            accepted = RNG.random() > 0.1
            now += 50_000_000
            emit("tool_decision", prompt, {
                "tool_name": tool, "decision": "accept" if accepted else "reject",
                "source": RNG.choice(["config", "user_temporary"]), "tool_use_id": use,
            })  # fmt: skip
            took = RNG.randrange(3, 3000)
            now += took * 1_000_000
            result = {
                "tool_name": tool, "tool_use_id": use, "success": str(accepted).lower(),
                "duration_ms": str(took), "decision_type": "accept" if accepted else "reject",
                "decision_source": "config", "tool_result_size_bytes": str(RNG.randrange(10, 20000)),
            }  # fmt: skip
            if tool == "Bash":
                result["tool_parameters"] = (
                    '{"bash_command":"pytest","full_command":"pytest -q tests/billing",'
                    '"description":"Run the billing tests"}'
                )
            emit("tool_result", prompt, result)
        now += RNG.randrange(5, 120) * 10**9
    return out


def log_requests(sessions: int, prompts: int, steps: int) -> tuple[list[bytes], int]:
    t0 = time.time_ns() - 3_600 * 10**9
    records = [r for i in range(sessions) for r in session_records(t0 + i * 10**9, prompts, steps)]
    bodies = []
    for start in range(0, len(records), BATCH_RECORDS):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.attributes.extend(
            [
                kv("service.name", "claude-code"),
                kv("service.version", "2.1.121"),
                kv("os.type", "linux"),
                kv("host.arch", "x64"),
            ]  # fmt: skip
        )
        sl = rl.scope_logs.add()
        sl.scope.name = "com.anthropic.claude_code.events"
        for body, at, attrs in records[start : start + BATCH_RECORDS]:
            record = sl.log_records.add(time_unix_nano=at, observed_time_unix_nano=at)
            record.body.string_value = body
            record.attributes.extend(kv(k, v) for k, v in attrs.items())
        bodies.append(request.SerializeToString())
    return bodies, len(records)


def _headers(key: str) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}


def _post_all(client, path: str, key: str, bodies: list[bytes]) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        send = lambda body: client.post(path, content=body, headers=_headers(key))  # noqa: E731
        for resp in pool.map(send, bodies):
            resp.raise_for_status()
            if resp.content not in (b"",):
                # Protobuf ExportLogsServiceResponse: empty when nothing was rejected.
                raise RuntimeError(f"{path} rejected part of a batch: {resp.content[:200]!r}")


def _rate(platform, client, path, key, bodies, count) -> float:
    before = platform.sql("SELECT COUNT(*) FROM tracing_span")[0][0]
    started = time.perf_counter()
    _post_all(client, path, key, bodies)
    while platform.sql("SELECT COUNT(*) FROM tracing_span")[0][0] < before + count:
        time.sleep(0.01)
    return count / (time.perf_counter() - started)


def _settled(platform) -> None:
    """Until the worker's search indexing stops growing the database."""
    last, still = None, 0
    while still < 3:
        # SQLite's attribute rows grow with each batch; PostgreSQL's index takes a new
        # segment id for each batch and each merge (its attribute table stays empty).
        now = platform.sql(
            "SELECT (SELECT COUNT(*) FROM tracing_traceattribute)"
            " + (SELECT coalesce(max(segment), 0) FROM tracing_searchblock)"
        )[0][0]
        still = still + 1 if now == last else 0
        last = now
        time.sleep(0.5)


def run(kind: str, rounds: int, sessions: int, prompts: int, steps: int) -> dict:
    platform = Platform(kind)
    try:
        platform.serve()
        platform.worker()
        log_rates, span_rates = [], []
        with httpx.Client(base_url=platform.url, timeout=300) as client:
            warm_logs, _ = log_requests(2, 1, 2)
            warm_spans, _, _ = requests_for(2, 2)
            warm = platform.create_tenant("warm")
            for body in warm_logs:
                client.post("/v1/logs", content=body, headers=_headers(warm)).raise_for_status()
            for body in warm_spans:
                client.post("/v1/traces", content=body, headers=_headers(warm)).raise_for_status()
            _settled(platform)
            # Stored bytes: one tenant's whole load, the worker's indexing included.
            bodies, records = log_requests(sessions, prompts, steps)
            raw = sum(len(b) for b in bodies)
            tables_before, blobs_before = platform.stored_by_table(), platform.blob_bytes()
            key = platform.create_tenant("stored")
            log_rates.append(_rate(platform, client, "/v1/logs", key, bodies, records))
            _settled(platform)
            growth = {
                name: size - tables_before.get(name, 0)
                for name, size in platform.stored_by_table().items()
                if size != tables_before.get(name, 0)
            }
            growth["(blob store)"] = platform.blob_bytes() - blobs_before
            for i in range(rounds):  # traces, logs, traces, logs, ...
                span_bodies, spans, _ = requests_for(max(1, records // 21), 10, tag=f"r{i}")
                tkey = platform.create_tenant(f"traces{i}")
                span_rates.append(_rate(platform, client, "/v1/traces", tkey, span_bodies, spans))
                bodies, records = log_requests(sessions, prompts, steps)
                lkey = platform.create_tenant(f"logs{i}")
                log_rates.append(_rate(platform, client, "/v1/logs", lkey, bodies, records))
        stored = sum(growth.values())
        return {
            "kind": kind,
            "records": records,
            "log_rates": log_rates,
            "span_rates": span_rates,
            "stored_per_record": stored / records,
            "raw_per_record": raw / records,
            "growth": growth,
        }
    finally:
        platform.stop()


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    kinds = os.environ.get("BENCH_KINDS", "embedded,postgres+s3").split(",")
    rounds = int(os.environ.get("BENCH_ROUNDS", 3))
    sessions, prompts, steps = 20, 3, 8  # 20 x 3 x (1 + 3 x 8) = 1,500 records a load
    print(f"load average {_load()}")
    print(
        f"{'store':<12} {'records/s':>10} {'spans/s':>9} {'B/record':>9} {'raw B/rec':>9}  target"
    )
    for kind in kinds:
        r = run(kind, rounds, sessions, prompts, steps)
        logs, spans = statistics.median(r["log_rates"]), statistics.median(r["span_rates"])
        print(
            f"{kind:<12} {logs:>10.0f} {spans:>9.0f} {r['stored_per_record']:>9.0f} "
            f"{r['raw_per_record']:>9.0f}  records/s >= spans/s: {'yes' if logs >= spans else 'NO'}\n"
            f"    [{r['records']} records a load; records/s "
            f"{min(r['log_rates']):.0f}-{max(r['log_rates']):.0f}, spans/s "
            f"{min(r['span_rates']):.0f}-{max(r['span_rates']):.0f} over {rounds} interleaved rounds]"
        )
        total = sum(r["growth"].values()) or 1
        for name, size in sorted(r["growth"].items(), key=lambda item: -item[1]):
            if size / total >= 0.01:
                print(f"    {name} {size / total:.0%} ({size / r['records']:.0f} B/record)")
    print(f"load average {_load()}")


if __name__ == "__main__":
    main()
