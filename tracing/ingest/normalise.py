"""One canonical span from every shape agents send today.

Three conventions are read: the OpenTelemetry GenAI semantic conventions (current
names), the older GenAI forms (`gen_ai.prompt.N.*`, `gen_ai.completion.N.*`,
`gen_ai.system`, message events) and OpenInference (`llm.*`, `input.value`, ...).
Messages come out in the current GenAI shape:
    {"role": "user", "parts": [{"type": "text", "content": "..."}]}
Attributes that are not mapped to a column or a message are kept as they came.
"""

import math
import re
from dataclasses import dataclass, field

import orjson

from tracing.models import StatusCode

# The attribute keys each canonical column is read from, first match wins.
OPERATION_KEYS = ("gen_ai.operation.name",)
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
REQUEST_MODEL_KEYS = ("gen_ai.request.model", "llm.request.model_name", "llm.model_name")
RESPONSE_MODEL_KEYS = ("gen_ai.response.model", "llm.response.model_name", "llm.model_name")
INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
SESSION_KEYS = ("gen_ai.conversation.id", "session.id", "gen_ai.session.id")
AGENT_KEYS = ("gen_ai.agent.name", "agent.name")
# Who the agent acted for, as the instrumentations and tracing products name it.
USER_KEYS = ("user.id", "enduser.id", "gen_ai.user.id", "langfuse.user.id", "llm.user")
TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name")
TOOL_CALL_ID_KEYS = ("gen_ai.tool.call.id", "tool_call.id")
RUN_ID_KEYS = ("flightdeck.run.id",)

# Attributes under their current GenAI names whose value a column holds exactly: they
# are not stored twice, and reading a span puts them back (see tracing.selectors).
COLUMN_ATTRIBUTES = (
    ("gen_ai.operation.name", "operation", 64),
    ("gen_ai.provider.name", "provider", 64),
    ("gen_ai.request.model", "request_model", 255),
    ("gen_ai.response.model", "response_model", 255),
    ("gen_ai.usage.input_tokens", "input_tokens", None),
    ("gen_ai.usage.output_tokens", "output_tokens", None),
    ("gen_ai.conversation.id", "session_id", 255),
    ("gen_ai.agent.name", "agent_name", 255),
    ("gen_ai.tool.name", "tool_name", 255),
    ("gen_ai.tool.call.id", "tool_call_id", 255),
    ("flightdeck.run.id", "run_id", 64),
)

# Values that are payloads: stored once each, outside the span row.
TOOL_VALUE_KEYS = ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result")

OPENINFERENCE_KINDS = {
    "LLM": "chat",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
    "EMBEDDING": "embeddings",
    "RETRIEVER": "retrieval",
    "CHAIN": "chain",
    "RERANKER": "rerank",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluate",
}

_LEGACY_MSG = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")
_OI_MSG = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(.+)$")
_OI_TOOL_CALL = re.compile(r"^tool_calls\.(\d+)\.tool_call\.(.+)$")
_OI_CONTENT = re.compile(r"^contents\.(\d+)\.(.+)$")
_LEGACY_TOOL_CALL = re.compile(r"^tool_calls\.(\d+)\.(.+)$")
_FLATTENED_PREFIXES = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "llm.input_messages.",
    "llm.output_messages.",
)

MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def text(value: str) -> str:
    """PostgreSQL's text cannot hold NUL, which no GenAI text means anything by: it is
    dropped here, so one such character cannot cost a whole batch."""
    return value.replace("\x00", "") if "\x00" in value else value


def any_value(v):
    """An OTLP AnyValue as a plain Python value."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return text(v.string_value)
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {text(kv.key): any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return None


def attributes(kvs) -> dict:
    return {text(kv.key): any_value(kv.value) for kv in kvs}


@dataclass(slots=True)
class NormalSpan:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    service_name: str
    resource: dict
    scope: dict
    attributes: dict
    events: list
    links: list
    operation: str = ""
    provider: str = ""
    request_model: str = ""
    response_model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    session_id: str = ""
    agent_name: str = ""
    user_id: str = ""
    run_id: str = ""
    tool_name: str = ""
    tool_call_id: str = ""
    input_messages: list | None = None
    output_messages: list | None = None
    system_instructions: list | None = None
    tool_values: dict = field(default_factory=dict)
    columns_hold: int = 0  # bit i set: COLUMN_ATTRIBUTES[i] was sent and lives in its column


# Span columns are signed 64-bit (times) and 32-bit (token counts) integers.
MAX_NS = 2**63 - 1
MAX_TOKENS = 2**31 - 1


def span_problem(span) -> str | None:
    """Why a span cannot be stored, or None. Checked span by span so the rest are kept."""
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "trace_id must be 16 bytes, not all zero"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "span_id must be 8 bytes, not all zero"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "parent_span_id must be 8 bytes"
    if not span.name:
        return "name is required"
    if span.start_time_unix_nano == 0:
        return "start_time_unix_nano is required"
    if span.end_time_unix_nano and span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    if span.end_time_unix_nano > MAX_NS or span.start_time_unix_nano > MAX_NS:
        return f"time_unix_nano must be below 2^63 ({MAX_NS})"
    return _token_problem(span)


def _token_problem(span) -> str | None:
    """A token count the column cannot hold (±inf, 1e308, 40 digits) rejects the span:
    storing it clipped or dropped would misstate cost."""
    sent = {
        kv.key: any_value(kv.value)
        for kv in span.attributes
        if kv.key in INPUT_TOKEN_KEYS or kv.key in OUTPUT_TOKEN_KEYS
    }
    if not sent:
        return None
    for keys in (INPUT_TOKEN_KEYS, OUTPUT_TOKEN_KEYS):
        key = next((k for k in keys if sent.get(k) not in (None, "")), None)
        if key is None:
            continue
        value = sent[key]
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} must be a finite number"
        count = _as_int(value)
        if count is not None and not 0 <= count <= MAX_TOKENS:
            return f"{key} must be between 0 and {MAX_TOKENS}"
    return None


def _first(attrs: dict, keys):
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _as_int(value) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _json_or_text(value):
    """Structured GenAI attributes may arrive as JSON strings or as structured values."""
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("[", "{"):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
    return value


def _text_message(role: str, content) -> dict:
    parts = []
    if content not in (None, ""):
        parts.append(
            {
                "type": "text",
                "content": content if isinstance(content, str) else orjson.dumps(content).decode(),
            }
        )
    return {"role": role or "user", "parts": parts}


def _messages_attr(value) -> list | None:
    parsed = _json_or_text(value)
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, dict):
        return [parsed]
    if isinstance(parsed, str):
        return [_text_message("user", parsed)]
    return None


class ResentMessages:
    """Input messages of one batch, parsed once per message rather than once per step.

    An agent resends the whole conversation on every step, as a JSON array that is the
    previous step's with its closing bracket replaced by the new messages: parsing each
    in full made a trace's parsing grow with the square of its steps. For each trace
    the last array parsed is kept; a later one that starts with it (all but its "]")
    and goes on with a comma and a non-empty array's elements is the same JSON, so only
    that tail is parsed, and the earlier messages are the same objects (which also lets
    the payload batch digest each once: `PayloadBatch.message`)."""

    def __init__(self):
        self.last: dict[bytes, tuple[str, list]] = {}  # trace id -> (array sans "]", parsed)

    def parse(self, trace_id: bytes, value) -> list | None:
        if not isinstance(value, str) or not value.endswith("]"):
            return _messages_attr(value)
        parsed = None
        known = self.last.get(trace_id)
        if known is not None and value.startswith(known[0]):
            tail = value[len(known[0]) :].lstrip()
            if tail[:1] == ",":
                try:
                    more = orjson.loads("[" + tail[1:])
                except orjson.JSONDecodeError:
                    more = None
                if isinstance(more, list) and more:
                    parsed = known[1] + more
        if parsed is None:
            parsed = _json_or_text(value)
            if not isinstance(parsed, list):
                return _messages_attr(parsed)
        if parsed:
            self.last[trace_id] = (value[:-1], parsed)
        return parsed


def _system_attr(value) -> list | None:
    parsed = _json_or_text(value)
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, str):
        return [{"type": "text", "content": parsed}]
    if isinstance(parsed, dict):
        return [parsed]
    return None


def _indexed_messages(attrs: dict, pattern, wanted: str) -> dict[int, dict]:
    """Collect flattened `<prefix>.N.<field>` attributes into {N: {field: value}}."""
    found: dict[int, dict] = {}
    for key in [k for k in attrs if k.startswith(_FLATTENED_PREFIXES)]:
        match = pattern.match(key)
        if not match or match.group(1) != wanted:
            continue
        found.setdefault(int(match.group(2)), {})[match.group(3)] = attrs.pop(key)
    return found


def _tool_call(call_id, name, arguments) -> dict:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": _json_or_text(arguments)}


def _take_flattened_calls(fields: dict, pattern) -> list[dict]:
    """Pop `tool_calls.N.<field>` entries of one message into {field: value} per call."""
    calls: dict[int, dict] = {}
    for name in list(fields):
        match = pattern.match(name)
        if match:
            calls.setdefault(int(match.group(1)), {})[match.group(2)] = fields.pop(name)
    return [call for _, call in sorted(calls.items())]


def _as_tool_response(message: dict, tool_call_id) -> None:
    if tool_call_id and message["role"] == "tool":
        text = message["parts"][0]["content"] if message["parts"] else None
        message["parts"] = [{"type": "tool_call_response", "id": tool_call_id, "response": text}]


def _legacy_messages(attrs: dict, which: str) -> list | None:
    found = _indexed_messages(attrs, _LEGACY_MSG, which)
    if not found:
        return None
    messages = []
    for _, fields in sorted(found.items()):
        role = fields.pop("role", "assistant" if which == "completion" else "user")
        message = _text_message(role, fields.pop("content", None))
        finish = fields.pop("finish_reason", None)
        if finish:
            message["finish_reason"] = finish
        calls = _json_or_text(fields.pop("tool_calls", None)) or []
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                fn = call.get("function") or {}
                message["parts"].append(
                    _tool_call(
                        call.get("id"),
                        fn.get("name", call.get("name")),
                        fn.get("arguments", call.get("arguments")),
                    )
                )
        for call in _take_flattened_calls(fields, _LEGACY_TOOL_CALL):
            message["parts"].append(
                _tool_call(call.get("id"), call.get("name"), call.get("arguments"))
            )
        _as_tool_response(message, fields.pop("tool_call_id", None))
        if fields:
            message["attributes"] = fields  # anything else stays with its message
        messages.append(message)
    return messages


def _openinference_contents(fields: dict) -> list[dict]:
    """`contents.N.message_content.*` parts of one OpenInference message: text as text,
    images as a placeholder (the image itself is not kept), tool calls as tool calls."""
    contents: dict[int, dict] = {}
    for name in list(fields):
        match = _OI_CONTENT.match(name)
        if match:
            contents.setdefault(int(match.group(1)), {})[match.group(2)] = fields.pop(name)
    parts = []
    for _, content in sorted(contents.items()):
        kind = content.get("message_content.type")
        if "message_content.text" in content:
            parts.append({"type": "text", "content": str(content["message_content.text"])})
        elif kind == "image" or any(k.startswith("message_content.image") for k in content):
            parts.append({"type": "text", "content": "[image]"})
        elif "tool_call.function.name" in content:
            parts.append(
                _tool_call(
                    content.get("tool_call.id"),
                    content.get("tool_call.function.name"),
                    content.get("tool_call.function.arguments"),
                )
            )
    return parts


def _openinference_messages(attrs: dict, which: str) -> list | None:
    found = _indexed_messages(attrs, _OI_MSG, which)
    if not found:
        return None
    messages = []
    for _, fields in sorted(found.items()):
        role = fields.pop("role", "assistant" if which == "output" else "user")
        message = _text_message(role, fields.pop("content", None))
        message["parts"].extend(_openinference_contents(fields))
        calls = [
            _tool_call(call.get("id"), call.get("function.name"), call.get("function.arguments"))
            for call in _take_flattened_calls(fields, _OI_TOOL_CALL)
        ]
        # The Anthropic instrumentation lists each tool call twice, under tool_calls and
        # again as a content part: keep one.
        message["parts"] = [p for p in message["parts"] if p["type"] != "tool_call"] + (
            calls or [p for p in message["parts"] if p["type"] == "tool_call"]
        )
        _as_tool_response(message, fields.pop("tool_call_id", None))
        if fields:
            message["attributes"] = fields
        messages.append(message)
    return messages


def _event_messages(events: list) -> tuple[list | None, list | None, list]:
    """Older GenAI instrumentations send messages as span events; take them out."""
    inputs, outputs, rest = [], [], []
    for event in events:
        role = MESSAGE_EVENTS.get(event["name"])
        attrs = event.get("attributes") or {}
        if role:
            message = _text_message(attrs.get("role", role), _json_or_text(attrs.get("content")))
            _as_tool_response(message, attrs.get("id"))
            inputs.append(message)
        elif event["name"] == "gen_ai.choice":
            body = _json_or_text(attrs.get("message")) or {}
            content = body.get("content") if isinstance(body, dict) else attrs.get("content")
            message = _text_message(
                body.get("role", "assistant") if isinstance(body, dict) else "assistant", content
            )
            if attrs.get("finish_reason"):
                message["finish_reason"] = attrs["finish_reason"]
            outputs.append(message)
        else:
            rest.append(event)
    return inputs or None, outputs or None, rest


def normalise(
    span, resource: dict, scope: dict, resent: ResentMessages | None = None
) -> NormalSpan:
    """`resent`: the batch's conversations so far, shared by its spans' calls."""
    attrs = attributes(span.attributes)
    events = [
        {
            "name": text(e.name),
            "time_ns": e.time_unix_nano,
            **({"attributes": attributes(e.attributes)} if e.attributes else {}),
        }
        for e in span.events
    ]
    links = [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            **({"attributes": attributes(link.attributes)} if link.attributes else {}),
        }
        for link in span.links
    ]
    status_code = span.status.code if span.status.code in (0, 1, 2) else StatusCode.UNSET
    n = NormalSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=text(span.name)[:255],
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano or span.start_time_unix_nano,
        status_code=status_code,
        status_message=text(span.status.message),
        service_name=str(resource.get("service.name", ""))[:255],
        resource=resource,
        scope=scope,
        attributes=attrs,
        events=events,
        links=links,
    )
    operation = _first(attrs, OPERATION_KEYS)
    oi_kind = attrs.get("openinference.span.kind")
    if not operation and isinstance(oi_kind, str):
        operation = OPENINFERENCE_KINDS.get(oi_kind.upper(), oi_kind.lower())
    n.provider = str(_first(attrs, PROVIDER_KEYS) or "")[:64]
    n.request_model = str(_first(attrs, REQUEST_MODEL_KEYS) or "")[:255]
    n.response_model = str(_first(attrs, RESPONSE_MODEL_KEYS) or "")[:255]
    n.input_tokens = _as_int(_first(attrs, INPUT_TOKEN_KEYS))
    n.output_tokens = _as_int(_first(attrs, OUTPUT_TOKEN_KEYS))
    n.session_id = str(_first(attrs, SESSION_KEYS) or "")[:255]
    n.agent_name = str(_first(attrs, AGENT_KEYS) or "")[:255]
    n.user_id = str(_first(attrs, USER_KEYS) or "")[:255]
    n.run_id = str(_first(attrs, RUN_ID_KEYS) or "")[:64]
    n.tool_name = str(_first(attrs, TOOL_NAME_KEYS) or "")[:255]
    n.tool_call_id = str(_first(attrs, TOOL_CALL_ID_KEYS) or "")[:255]

    # Messages, current convention first, then the older ones.
    if "gen_ai.input.messages" in attrs:
        value = attrs.pop("gen_ai.input.messages")
        n.input_messages = (
            resent.parse(span.trace_id, value) if resent is not None else _messages_attr(value)
        )
    if "gen_ai.output.messages" in attrs:
        n.output_messages = _messages_attr(attrs.pop("gen_ai.output.messages"))
    if "gen_ai.system_instructions" in attrs:
        n.system_instructions = _system_attr(attrs.pop("gen_ai.system_instructions"))
    flattened = any(key.startswith(_FLATTENED_PREFIXES) for key in attrs)
    if n.input_messages is None and flattened:
        n.input_messages = _legacy_messages(attrs, "prompt") or _openinference_messages(
            attrs, "input"
        )
    if n.output_messages is None and flattened:
        n.output_messages = _legacy_messages(attrs, "completion") or _openinference_messages(
            attrs, "output"
        )
    if (n.input_messages is None or n.output_messages is None) and events:
        ev_in, ev_out, rest = _event_messages(events)
        if ev_in or ev_out:
            n.events = rest
            n.input_messages = n.input_messages or ev_in
            n.output_messages = n.output_messages or ev_out

    # Tool calls: OpenInference tool spans carry arguments and result in input/output.value.
    for key in TOOL_VALUE_KEYS:
        if key in attrs:
            n.tool_values[key] = attrs.pop(key)
    if operation == "execute_tool" and oi_kind and not n.tool_values:
        if "input.value" in attrs:
            n.tool_values["gen_ai.tool.call.arguments"] = attrs.pop("input.value")
        if "output.value" in attrs:
            n.tool_values["gen_ai.tool.call.result"] = attrs.pop("output.value")
    if not operation and (n.input_messages or n.output_messages):
        operation = "chat"
    n.operation = str(operation or "")[:64]
    for bit, (key, column, limit) in enumerate(COLUMN_ATTRIBUTES):
        if key not in attrs:
            continue
        sent, held = attrs[key], getattr(n, column)
        exact = (
            (isinstance(sent, int) and not isinstance(sent, bool))
            if limit is None
            else (isinstance(sent, str) and len(sent) <= limit)
        )
        if exact and sent == held:
            del attrs[key]
            n.columns_hold |= 1 << bit
    return n
