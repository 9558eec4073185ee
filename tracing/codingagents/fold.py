"""Coding agents' events (OTLP log records) folded into spans, which then take the one
span path (spans_ingest): redaction, payloads, trace summaries, cost and alerts apply
to them as to any span.

- A session per `session.id` / `conversation.id`: the spans carry it as
  `gen_ai.conversation.id`, so the trace summaries carry it as their session.
- A trace per prompt: its id derived from the session and `prompt.id`. An agent that
  sends no prompt id (Codex) has its records cut into traces by its prompt events and
  by silence longer than GAP_NS, reading where the session's stored traces start.
- Every id is derived from the record (a keyed-free BLAKE2b of the agent, session and
  `event.sequence`, else its time and attributes), so a resent batch gives the same
  spans, which the span path stores once, and a late record joins its stored trace.
- A record sent inside one of the agent's own (beta) spans carries that span's context:
  its span joins that trace under that span instead of starting one of its own.
"""

import hashlib
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from controlplane.tenancy import tenant_scope
from tracing.codingagents import mapping
from tracing.codingagents.mapping import Shape
from tracing.ingest.normalise import MAX_NS, any_value, attributes
from tracing.ingest.pipeline import IngestResult, spans_ingest
from tracing.models import Trace

# Silence after which an agent without prompt ids is taken to have started a new trace.
GAP_NS = 30 * 60 * 10**9
MS = 10**6


@dataclass(slots=True)
class _Folded:
    """One record on its way to becoming a span."""

    name: str
    event: mapping.Event
    session: str
    prompt: str
    time_ns: int
    attrs: dict  # the span's attributes
    resource_at: int  # which resource_logs / scope_logs it came in
    scope_at: int
    shape: Shape
    span_id: bytes = b""
    trace_id: bytes = b""
    parent_span_id: bytes = b""
    status_message: str = ""
    error: bool = False


def _digest(*parts, size: int) -> bytes:
    raw = hashlib.blake2b(orjson.dumps(parts, default=str), digest_size=size).digest()
    return raw if any(raw) else b"\x01" + raw[1:]


def _time_ns(record, attrs: dict) -> int:
    if record.time_unix_nano:
        return record.time_unix_nano
    stamp = attrs.get("event.timestamp")
    if isinstance(stamp, str) and stamp:
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp() * 1e9)
    return record.observed_time_unix_nano


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _as_count(value: str):
    try:
        return int(value)
    except ValueError:
        return value


def _is_false(value) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _user(attrs: dict, resource: dict) -> str:
    for source in (attrs, resource):
        for key in mapping.USER_KEYS:
            value = source.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    return ""


def _fold_record(record, *, resource_at: int, scope_at: int, resource: dict):
    """A record as a _Folded, or a reason to refuse it, or None (folded into another)."""
    attrs = attributes(record.attributes)
    body = any_value(record.body) if record.HasField("body") else None
    name, event = mapping.event_for((record.event_name, attrs.get("event.name"), body))
    if event is None:
        label = record.event_name or attrs.get("event.name") or body or "?"
        return f"log record {str(label)[:80]!r}: not an event of a coding agent Flightdeck reads"
    shape = event.shape
    if event.kind_key:
        shape = event.kinds.get(str(attrs.get(event.kind_key, "")), shape)
        if shape is Shape.FOLDED and event.error_key and attrs.get(event.error_key):
            shape = Shape.ERROR
    if shape is Shape.FOLDED:
        return None
    agent = event.agent
    session = attrs.get(agent.session_key)
    if not isinstance(session, str) or not session:
        return f"log record {name!r}: {agent.session_key} is required"
    time_ns = _time_ns(record, attrs)
    if not time_ns:
        return f"log record {name!r}: time_unix_nano (or event.timestamp) is required"
    if time_ns > MAX_NS:
        return f"log record {name!r}: time_unix_nano must be below 2^63 ({MAX_NS})"
    prompt = attrs.get(agent.prompt_key) if agent.prompt_key else None
    span_attrs = {"gen_ai.agent.name": agent.name, "gen_ai.conversation.id": session}
    if shape in (Shape.CHAT, Shape.ERROR):
        span_attrs["gen_ai.operation.name"] = "chat"
        span_attrs["gen_ai.provider.name"] = agent.provider
    elif shape is Shape.TOOL_RESULT:
        span_attrs["gen_ai.operation.name"] = "execute_tool"
    elif shape is Shape.PROMPT:
        span_attrs["gen_ai.operation.name"] = "invoke_agent"
    for key, value in attrs.items():
        if key in mapping.SPAN_FIELD_KEYS or key == agent.session_key:
            continue
        if key == event.prompt_text_key and isinstance(value, str):
            message = {"role": "user", "parts": [{"type": "text", "content": value}]}
            span_attrs["gen_ai.input.messages"] = orjson.dumps([message]).decode()
            continue
        target = event.renames.get(key, key)
        if target.startswith("gen_ai.usage.") and isinstance(value, str):
            # Sent as text by some versions; billing reads numbers. A count that is not
            # one stays as sent, and the span path refuses it with its reason.
            value = _as_count(value)
        span_attrs[target] = value
    if "user.id" not in span_attrs:
        # The span path takes a span's user from user.id or enduser.id: one that sent
        # no user.id (Codex) acts for its account or e-mail.
        user = _user(attrs, resource)
        if user:
            span_attrs["enduser.id"] = user
    folded = _Folded(
        name=name,
        event=event,
        session=session,
        prompt=prompt if isinstance(prompt, str) else "",
        time_ns=time_ns,
        attrs=span_attrs,
        resource_at=resource_at,
        scope_at=scope_at,
        shape=shape,
    )
    failed = event.success_key and _is_false(attrs.get(event.success_key))
    if shape is Shape.ERROR or failed or (event.error_key and attrs.get(event.error_key)):
        folded.error = True
        message = attrs.get(event.error_key) if event.error_key else None
        folded.status_message = str(message or "")[:2000]
    sequence = attrs.get("event.sequence")
    if sequence is not None:
        identity = (agent.name, session, name, sequence)
    else:
        identity = (agent.name, session, name, time_ns, sorted(attrs.items()))
    folded.span_id = _digest("span", *identity, size=8)
    if len(record.trace_id) == 16 and any(record.trace_id):
        # Sent inside the agent's own span: join it there.
        folded.trace_id = record.trace_id
        if len(record.span_id) == 8 and any(record.span_id):
            folded.parent_span_id = record.span_id
    elif folded.prompt:
        folded.trace_id = _digest("trace", agent.name, session, folded.prompt, size=16)
    return folded


def _root_span_id(trace_id: bytes) -> bytes:
    return _digest("root", trace_id.hex(), size=8)


@dataclass(slots=True)
class _Cut:
    """A trace of a session without prompt ids: where it starts and was last seen."""

    trace_id: bytes
    start_ns: int
    end_ns: int


def _stored_cuts(session: str, since_ns: int, until_ns: int) -> list[_Cut]:
    since = datetime.fromtimestamp(since_ns / 1e9, tz=UTC)
    until = datetime.fromtimestamp(until_ns / 1e9, tz=UTC)
    stored = (
        Trace.objects.filter(session_id=session[:255], start_time__lte=until, end_time__gte=since)
        .order_by("start_ns")
        .values_list("trace_id", "start_ns", "end_ns")
    )
    return [_Cut(t.bytes, start, end) for t, start, end in stored]


def _cut_by_time(records: list[_Folded]) -> None:
    """Traces for records without a prompt id: a prompt event starts one; any other
    record joins the latest trace of its session started before it, unless that trace
    has been silent for GAP_NS. Stored traces count, so a resent or late record lands
    where it did, or would have, the first time."""
    by_session: dict[tuple, list[_Folded]] = defaultdict(list)
    for f in records:
        if not f.trace_id:
            by_session[(f.event.agent.name, f.session)].append(f)
    for (agent, session), group in by_session.items():
        group.sort(key=lambda f: (f.time_ns, f.shape is not Shape.PROMPT))
        cuts = _stored_cuts(session, group[0].time_ns - GAP_NS, group[-1].time_ns)
        for f in group:
            before = [c for c in cuts if c.start_ns <= f.time_ns]
            latest = before[-1] if before else None
            if f.shape is not Shape.PROMPT and latest and f.time_ns - latest.end_ns <= GAP_NS:
                f.trace_id = latest.trace_id
                latest.end_ns = max(latest.end_ns, f.time_ns)
                continue
            f.trace_id = _digest("trace", agent, session, f.time_ns, size=16)
            if latest is None or latest.trace_id != f.trace_id:
                cuts.append(_Cut(f.trace_id, f.time_ns, f.time_ns))
                cuts.sort(key=lambda c: c.start_ns)


def _value(value) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, list):
        return common_pb2.AnyValue(
            array_value=common_pb2.ArrayValue(values=[_value(v) for v in value])
        )
    if isinstance(value, dict):
        kvs = [common_pb2.KeyValue(key=k, value=_value(v)) for k, v in value.items()]
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=kvs))
    return common_pb2.AnyValue(string_value="" if value is None else str(value))


def _span(f: _Folded) -> trace_pb2.Span:
    duration = _number(f.attrs.get(f.event.duration_key)) if f.event.duration_key else None
    start = f.time_ns
    if duration and duration > 0:
        start = max(1, f.time_ns - int(duration * MS))
    if f.shape is Shape.PROMPT and not f.parent_span_id:
        span_id, parent = _root_span_id(f.trace_id), b""
    else:
        span_id, parent = f.span_id, f.parent_span_id or _root_span_id(f.trace_id)
    tool = f.attrs.get("gen_ai.tool.name", "")
    name = {
        Shape.PROMPT: f"invoke_agent {f.event.agent.name}",
        Shape.CHAT: f"chat {f.attrs.get('gen_ai.request.model', '')}".strip(),
        Shape.TOOL_RESULT: f"execute_tool {tool}".strip(),
        Shape.TOOL_DECISION: f"tool_decision {tool}".strip(),
    }.get(f.shape, f.name)
    span = trace_pb2.Span(
        trace_id=f.trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_CLIENT
        if f.shape in (Shape.CHAT, Shape.ERROR)
        else trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=f.time_ns,
        attributes=[common_pb2.KeyValue(key=k, value=_value(v)) for k, v in f.attrs.items()],
    )
    if f.error:
        span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        span.status.message = f.status_message
    return span


def log_records_trace_request(request) -> tuple[ExportTraceServiceRequest, IngestResult]:
    """The spans an ExportLogsServiceRequest's records fold into (records refused and
    folded away counted in the result). Reads the tenant's stored traces: call it
    inside the tenant's scope."""
    result = IngestResult()
    folded: list[_Folded] = []
    for r_at, resource_logs in enumerate(request.resource_logs):
        resource = attributes(resource_logs.resource.attributes)
        for s_at, scope_logs in enumerate(resource_logs.scope_logs):
            for record in scope_logs.log_records:
                f = _fold_record(record, resource_at=r_at, scope_at=s_at, resource=resource)
                if isinstance(f, str):
                    result.reject(f)
                elif f is None:
                    result.accepted += 1
                else:
                    folded.append(f)
    _cut_by_time(folded)
    out = ExportTraceServiceRequest()
    groups: dict[tuple[int, int], trace_pb2.ScopeSpans] = {}
    for f in folded:
        scope_spans = groups.get((f.resource_at, f.scope_at))
        if scope_spans is None:
            resource_logs = request.resource_logs[f.resource_at]
            resource_spans = out.resource_spans.add()
            resource_spans.resource.CopyFrom(resource_logs.resource)
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.CopyFrom(resource_logs.scope_logs[f.scope_at].scope)
            groups[(f.resource_at, f.scope_at)] = scope_spans
        scope_spans.spans.append(_span(f))
    return out, result


def log_records_ingest(*, tenant_id: int, request) -> IngestResult:
    """Store an ExportLogsServiceRequest's coding-agent events for one tenant, as spans.

    Records the table does not know, or without a session or a time, are refused one by
    one (partial success). Raises database and blob store errors unchanged, as
    spans_ingest does, so the caller answers 503 and the exporter retries.
    """
    with tenant_scope(tenant_id):
        spans, result = log_records_trace_request(request)
    if not spans.resource_spans:
        return result
    stored = spans_ingest(tenant_id=tenant_id, request=spans)
    # A resent record is accepted: it is stored, once.
    result.accepted += stored.accepted + stored.duplicates
    for reason in stored.errors:
        result.reject(reason)
    result.rejected += stored.rejected - len(stored.errors)
    return result


def trace_id_hex(*, agent: str, session: str, prompt: str) -> str:
    """The trace of a prompt of an agent that sends prompt ids (for links and tests)."""
    return uuid.UUID(bytes=_digest("trace", agent, session, prompt, size=16)).hex
