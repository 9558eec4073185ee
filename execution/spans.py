"""A managed run's spans, recorded with the OpenTelemetry SDK and sent through the one
span path (tracing.exporter.InProcessSpanExporter -> tracing.services.spans_ingest),
so redaction and payload storage apply exactly as for external agents.

One TracerProvider per run (never the global one). Finished spans are buffered and
exported by the run's supervising thread (flush()), so a gateway call never waits on
span ingest and the database work stays on one thread.
"""

import json
import logging
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Status, StatusCode

log = logging.getLogger(__name__)


def span_exporter(tenant_id: int, sources=None):
    """The tracing app's in-process exporter, or None while tracing is not installed."""
    try:
        from tracing.exporter import InProcessSpanExporter
    except ImportError:
        log.warning("tracing is not installed: run spans are not exported")
        return None
    return InProcessSpanExporter(tenant_id, sources)


def source_inputs(tenant_id: int, trace_id: str):
    """The conversations of a replay's source trace, or None without tracing."""
    try:
        from tracing.selectors import SourceInputs
    except ImportError:
        return None
    return SourceInputs(tenant_id=tenant_id, trace_id=trace_id)


class _FixedTraceId(RandomIdGenerator):
    """Keeps a resumed run in the trace it started."""

    def __init__(self, trace_id: int | None):
        self.trace_id = trace_id

    def generate_trace_id(self) -> int:
        return self.trace_id or super().generate_trace_id()


class _Buffer(SpanProcessor):
    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def on_end(self, span):
        with self.lock:
            self.spans.append(span)

    def take(self):
        with self.lock:
            spans, self.spans = self.spans, []
        return spans


def semconv_messages(messages: list, system=None) -> list:
    """Anthropic messages -> GenAI semconv: [{"role", "parts": [{"type", ...}]}]."""
    out = []
    for message in messages or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        parts = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                parts.append({"type": "text", "content": block.get("text", "")})
            elif kind == "tool_use":
                parts.append(
                    {
                        "type": "tool_call",
                        "id": block.get("id"),
                        "name": block.get("name"),
                        "arguments": block.get("input"),
                    }
                )
            elif kind == "tool_result":
                parts.append(
                    {
                        "type": "tool_call_response",
                        "id": block.get("tool_use_id"),
                        "response": block.get("content"),
                    }
                )
        out.append({"role": message.get("role", "user"), "parts": parts})
    return out


def system_instructions(system) -> list:
    if not system:
        return []
    if isinstance(system, str):
        return [{"type": "text", "content": system}]
    return [{"type": "text", "content": b.get("text", "")} for b in system if isinstance(b, dict)]


class RunTracer:
    def __init__(
        self,
        *,
        tenant_id: int,
        run_id: int,
        agent_name: str,
        trace_id: str = "",
        source_trace_id: str = "",
    ):
        self.run_id, self.agent_name = run_id, agent_name
        # A replay's or fork's source trace: its chat spans hold the conversations the
        # calls answered from the source resend (see Gateway._from_source).
        self.sources = source_inputs(tenant_id, source_trace_id) if source_trace_id else None
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": agent_name}),
            id_generator=_FixedTraceId(int(trace_id, 16) if trace_id else None),
        )
        self.buffer = _Buffer()
        self.provider.add_span_processor(self.buffer)
        self.exporter = span_exporter(tenant_id, self.sources)
        self.tracer = self.provider.get_tracer("flightdeck.execution")
        self.root = self.tracer.start_span(
            f"invoke_agent {agent_name}",
            kind=trace.SpanKind.INTERNAL,
            attributes=self.common({"gen_ai.operation.name": "invoke_agent"}),
        )
        self.context = trace.set_span_in_context(self.root)

    def preload(self) -> None:
        """Read a replay's source conversations now (the runner does it while the sandbox
        boots) rather than in the first answered call."""
        if self.sources is not None:
            self.sources.of("")

    @property
    def trace_id(self) -> str:
        return format(self.root.get_span_context().trace_id, "032x")

    def common(self, attributes: dict) -> dict:
        return {
            "gen_ai.agent.name": self.agent_name,
            "gen_ai.conversation.id": str(self.run_id),
            "flightdeck.run.id": str(self.run_id),
            **attributes,
        }

    def record(
        self, name: str, *, start_ns: int, end_ns: int, attributes: dict, error: str = ""
    ) -> str:
        """Record one finished call; its span id (hex), which the journal refers to."""
        span = self.tracer.start_span(
            name,
            context=self.context,
            kind=trace.SpanKind.CLIENT,
            start_time=start_ns,
            attributes=self.common({k: v for k, v in attributes.items() if v is not None}),
        )
        if error:
            span.set_attribute("error.type", error.split(":")[0][:100])
            span.set_status(Status(StatusCode.ERROR, error[:500]))
        span.end(end_time=end_ns)
        return format(span.get_span_context().span_id, "016x")

    def flush(self) -> None:
        spans = self.buffer.take()
        if spans and self.exporter is not None:
            try:
                self.exporter.export(spans)
            except Exception:  # noqa: BLE001 - lost spans must not fail the run
                log.exception("exporting %d spans of run %s failed", len(spans), self.run_id)

    def limits_hit(self, hits: dict[str, int], *, limits: dict) -> None:
        """An event on the run's root span for each limit the run ran into."""
        for name, count in sorted(hits.items()):
            attributes = {"flightdeck.limit.name": name, "flightdeck.limit.hits": count}
            if isinstance(limits.get(name), int | float):
                attributes["flightdeck.limit.value"] = limits[name]
            self.root.add_event("flightdeck.limit.hit", attributes)
        if hits:
            self.root.set_attribute("flightdeck.run.limit_hits", sorted(hits))

    def finish(self, *, status: str, error: str = "") -> None:
        self.root.set_attribute("flightdeck.run.status", status)
        if error:
            self.root.set_status(Status(StatusCode.ERROR, error[:500]))
        self.root.end()
        self.flush()
        self.provider.shutdown()


def as_json(value) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))
