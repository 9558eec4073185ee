"""OTLP load for scale-out tests and benchmarks: GenAI-like spans, sent by the
OpenTelemetry SDK's own OTLP/HTTP exporter (which retries as deployed exporters do) or
as pre-encoded protobuf bodies (so the client's encoding does not eat the cores the
servers are measured on).

Every span's identity is known to the sender, so a test can check that each span a
client got a 2xx for is stored exactly once."""

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import urllib3
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

RESOURCE = Resource.create({"service.name": "support-agent"})
SCOPE = InstrumentationScope("flightdeck.otlpload")
WORDS = "refund order account billing shipping invoice password delivery upgrade".split()
PROTOBUF = "application/x-protobuf"

SpanKey = tuple[int, int]  # (trace id, span id), as the span rows hold them


def trace_spans(rng: random.Random, *, steps: int) -> list[ReadableSpan]:
    """One agent turn: a root span and `steps` chat calls under it, each with a prompt
    and a completion that differ from trace to trace."""
    trace_id = rng.getrandbits(128) or 1
    t0 = time.time_ns()
    root_id = rng.getrandbits(63) or 1
    root_ctx = SpanContext(trace_id, root_id, is_remote=False, trace_flags=TraceFlags(1))
    spans = [
        ReadableSpan(
            name="invoke_agent support",
            context=root_ctx,
            resource=RESOURCE,
            instrumentation_scope=SCOPE,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
            kind=SpanKind.INTERNAL,
            start_time=t0,
            end_time=t0 + steps * 2_000_000,
        )
    ]
    for n in range(steps):
        question = " ".join(rng.choice(WORDS) for _ in range(24))
        ctx = SpanContext(trace_id, rng.getrandbits(63) or 1, False, trace_flags=TraceFlags(1))
        spans.append(
            ReadableSpan(
                name="chat claude-sonnet-4",
                context=ctx,
                parent=root_ctx,
                resource=RESOURCE,
                instrumentation_scope=SCOPE,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4",
                    "gen_ai.usage.input_tokens": 400 + n,
                    "gen_ai.usage.output_tokens": 80,
                    "gen_ai.prompt.0.role": "user",
                    "gen_ai.prompt.0.content": f"step {n}: {question}",
                    "gen_ai.completion.0.role": "assistant",
                    "gen_ai.completion.0.content": f"answer {rng.getrandbits(32)}: {question}",
                },
                kind=SpanKind.CLIENT,
                start_time=t0 + n * 2_000_000,
                end_time=t0 + n * 2_000_000 + 1_500_000,
            )
        )
    return spans


def batches(*, count: int, traces: int, steps: int, seed: int) -> list[list[ReadableSpan]]:
    """`count` export batches of `traces` traces each."""
    rng = random.Random(seed)
    return [
        [span for _ in range(traces) for span in trace_spans(rng, steps=steps)]
        for _ in range(count)
    ]


def span_key(span: ReadableSpan) -> SpanKey:
    return span.context.trace_id, span.context.span_id


def encode(batch: list[ReadableSpan]) -> bytes:
    return encode_spans(batch).SerializeToString()


def post_bodies(
    urls: list[str], key: str, bodies: list[list[bytes]], *, connections: int = 1
) -> float:
    """Each list of bodies sent by a client of its own, all clients at once; the seconds
    until the last is answered. A client keeps `connections` requests in flight, each
    connection taking the client's next body when its answer comes, as an exporter's
    pool of senders (the Collector's `sending_queue.num_consumers`) does. Connections
    are spread over the urls round robin, as a balancer spreads them over its backends.
    Raises unless every answer is a 200."""
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": PROTOBUF}

    def connection(url: str, mine: Iterator[bytes]) -> None:
        # urllib3 (what `requests`, and so the SDK's exporter, sends with) takes half
        # httpx's CPU a request, and the clients share the cores the servers are
        # measured on. One kept-alive connection, as an exporter's sender holds.
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with urllib3.HTTPConnectionPool(host, int(port), maxsize=1, timeout=120) as http:
            for body in mine:
                response = http.request(
                    "POST", "/v1/traces", body=body, headers=headers, retries=False
                )
                if response.status != 200:
                    failures.append(f"{response.status}: {response.data[:200]!r}")

    threads = []
    for n, mine in enumerate(bodies):
        shared = _Shared(mine)  # the client's bodies, each taken by one of its connections
        for c in range(connections):
            url = urls[(n * connections + c) % len(urls)]
            threads.append(threading.Thread(target=connection, args=(url, shared)))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} exports failed, the first: {failures[0]}")
    return time.perf_counter() - started


class _Shared:
    """An iterator several threads take items from, each item once."""

    def __init__(self, items: list):
        self._items = iter(items)
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            return next(self._items)


@dataclass
class ExportingClient:
    """A client exporting its batches with the SDK's OTLP/HTTP exporter, `pause` seconds
    apart. It records which spans the server accepted (a 2xx, after any retries) and
    which the exporter gave up on, as an application would see them reported."""

    url: str
    key: str
    batches: list[list[ReadableSpan]]
    pause: float = 0.0
    timeout: float = 60.0
    accepted: set[SpanKey] = field(default_factory=set)
    given_up: set[SpanKey] = field(default_factory=set)
    exported: int = 0  # batches finished, either way

    def __post_init__(self):
        self.exporter = OTLPSpanExporter(
            endpoint=f"{self.url}/v1/traces",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=self.timeout,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ExportingClient":
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the client did not finish within {timeout} s")
        self.exporter.shutdown()

    def _run(self) -> None:
        for batch in self.batches:
            result = self.exporter.export(batch)
            keys = {span_key(span) for span in batch}
            if result is SpanExportResult.SUCCESS:
                self.accepted |= keys
            else:
                self.given_up |= keys
            self.exported += 1
            if self.pause:
                time.sleep(self.pause)
