"""The per-trace detectors: pure functions over a trace's small state and its new
calls, so they are tested without a database.

A call is keyed by what makes two calls "the same": a tool's name with its arguments
in canonical JSON (keys sorted, whitespace gone), or an LLM request's model, system
instructions and input messages (their payload digests: the same content hashes the
same). Keys are 12-hex-digit hashes, so the state stays small.
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import jsonschema_rs
import orjson

MAX_KEYS = 256  # distinct calls remembered per trace; the rarest are forgotten first
RECENT = 6  # tool calls kept in order, enough for a 3-cycle seen twice
SEEN_BATCHES = 16
MAX_SCHEMA_BYTES = 256 * 1024  # a larger declared schema is not judged


@dataclass(slots=True)
class Call:
    span_id: str  # hex
    start_ns: int
    kind: str  # "tool" or "llm"
    name: str  # tool name or model
    key: str
    error: bool


@dataclass(slots=True)
class Finding:
    cause: str  # what makes it one incident
    span_id: str
    summary: str
    detail: dict
    count: int = 0  # how many times; compared with each rule's threshold

    def with_cause(self, cause: str) -> "Finding":
        self.cause = cause[:255]
        return self


def canonical(value) -> bytes:
    """Arguments as canonical JSON; a JSON text is parsed first, so `{"a": 1}` sent as
    a string and as an object are the same call."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value.strip().encode()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def call_key(*parts) -> str:
    h = hashlib.blake2b(digest_size=6)
    for part in parts:
        h.update(
            part if isinstance(part, bytes) else orjson.dumps(part, option=orjson.OPT_SORT_KEYS)
        )
        h.update(b"\0")
    return h.hexdigest()


def loop_scan(state: dict, calls: list[Call], *, retry_budget: int) -> list[Finding]:
    """Add calls (in start order) to the trace's state; what looks like a loop.

    state["k"]: key -> [repeats, retries in a row, last call failed]. A call whose
    previous twin failed is a retry: it counts against the retry budget, not as a
    repeat, and only a retry past the budget is a loop. Findings carry the repeat
    count; the caller compares it with each rule's threshold.
    """
    keys = state.setdefault("k", {})
    recent = state.setdefault("r", [])
    found = []
    for call in calls:
        entry = keys.get(call.key)
        if entry is None:
            entry = keys[call.key] = [1, 0, call.error]
        elif entry[2]:  # the previous identical call failed: a retry
            entry[1] += 1
            entry[2] = call.error
            if entry[1] > retry_budget:
                found.append(
                    Finding(
                        cause=f"loop:retry:{call.key}",
                        span_id=call.span_id,
                        summary=f"{call.name} retried {entry[1]} times (retry budget {retry_budget})",
                        detail={"call": call.name, "retries": entry[1], "kind": call.kind},
                        count=10**9,  # past the budget: a loop whatever the threshold
                    )
                )
        else:
            entry[0] += 1
            entry[1] = 0
            entry[2] = call.error
            found.append(
                Finding(
                    cause=f"loop:repeat:{call.key}",
                    span_id=call.span_id,
                    summary=f"{call.name} called {entry[0]} times with the same "
                    + ("arguments" if call.kind == "tool" else "request"),
                    detail={"call": call.name, "repeats": entry[0], "kind": call.kind},
                    count=entry[0],
                )
            )
        if call.kind == "tool":
            recent.append(call.key)
            del recent[:-RECENT]
            cycle = _cycle(recent)
            if cycle:
                found.append(
                    Finding(
                        cause=f"loop:cycle:{'-'.join(cycle)}",
                        span_id=call.span_id,
                        summary=f"a cycle of {len(cycle)} tool calls repeated, ending at {call.name}",
                        detail={"cycle_length": len(cycle)},
                        count=10**9,
                    )
                )
    if len(keys) > MAX_KEYS:
        for key, _ in sorted(keys.items(), key=lambda kv: kv[1][0])[: len(keys) - MAX_KEYS]:
            del keys[key]
    return found


def _cycle(recent: list[str]) -> list[str] | None:
    """A cycle of 2 or 3 distinct calls seen twice in a row at the end (A B A B)."""
    for length in (2, 3):
        if len(recent) >= 2 * length:
            tail = recent[-length:]
            if tail == recent[-2 * length : -length] and len(set(tail)) == length:
                return tail
    return None


def batch_seen(state: dict, span_ids: list[str]) -> bool:
    """True when this trace's batch was processed already (a redelivered task)."""
    digest = call_key(sorted(span_ids))
    seen = state.setdefault("b", [])
    if digest in seen:
        return True
    seen.append(digest)
    del seen[:-SEEN_BATCHES]
    return False


# --- hallucinated tool calls -------------------------------------------------------------


@dataclass(slots=True)
class Tools:
    """A request's declared tools: name -> JSON schema (None: no schema). `complete`
    is False when some definition could not be read: a call of a tool not listed is
    then not judged (it may be the unreadable one), its arguments still are."""

    schemas: dict
    complete: bool = True


def tool_definitions(attributes: dict) -> Tools | None:
    """The request's tools in any of the forms instrumentations record them, or None
    when the span declares no tools at all.

    A definition is Anthropic's `{name, input_schema}`, OpenAI's `{type: function,
    function: {name, parameters}}` (Chat Completions) or `{type: function, name,
    parameters}` (Responses, the GenAI conventions), or Gemini's `{function_declarations:
    [...]}`; a schema may come as a JSON text."""
    defs: list = []
    declared = False
    raw = attributes.get("gen_ai.tool.definitions")
    if raw is not None:
        declared = True
        raw = _json(raw)
        defs.extend(raw if isinstance(raw, list) else [raw])
    for key, value in attributes.items():
        if key.startswith("llm.tools.") and key.endswith(".tool.json_schema"):
            defs.append(_json(value))  # OpenInference
    functions: dict[str, dict] = {}
    for key, value in attributes.items():
        if key.startswith("llm.request.functions."):  # OpenLLMetry before the conventions
            index, _, field = key[len("llm.request.functions.") :].partition(".")
            functions.setdefault(index, {})[field] = _json(value)
    defs.extend(functions.values())
    if not defs and not declared:
        return None
    tools = Tools({})
    for d in defs:
        listed = d.get("function_declarations") if isinstance(d, dict) else None
        for fn in listed if isinstance(listed, list) else [d]:
            if isinstance(fn, dict) and isinstance(fn.get("function"), dict):
                fn = fn["function"]
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str):
                tools.complete = False
                continue
            schema = _json(fn.get("parameters") or fn.get("input_schema"))
            tools.schemas[name] = schema if isinstance(schema, dict) else None
    return tools


def tool_calls(output_messages) -> list[dict]:
    calls = []
    for message in output_messages if isinstance(output_messages, list) else []:
        parts = message.get("parts") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and part.get("type") == "tool_call":
                calls.append(part)
    return calls


def hallucination_scan(span_id: str, tools: Tools, output_messages) -> list[Finding]:
    """Tool calls of one response that name an undeclared tool or fail its schema."""
    found = []
    for call in tool_calls(output_messages):
        name = call.get("name") or ""
        name = name if isinstance(name, str) else orjson.dumps(name).decode()[:200]
        if name not in tools.schemas:
            if not tools.complete:
                continue
            found.append(
                Finding(
                    cause=f"hallucinated_tool:{span_id}:{name}",
                    span_id=span_id,
                    summary=f"the model called {name!r}, which the request did not declare",
                    detail={"tool": name, "declared": sorted(tools.schemas)[:50]},
                    count=1,
                )
            )
            continue
        schema = tools.schemas[name]
        if schema is None:
            continue
        arguments = _json(call.get("arguments"))
        error = schema_error(schema, {} if arguments is None else arguments)
        if error:
            found.append(
                Finding(
                    cause=f"hallucinated_tool:{span_id}:{name}",
                    span_id=span_id,
                    summary=f"the model called {name!r} with arguments its schema refuses: {error}",
                    detail={"tool": name, "error": error},
                    count=1,
                )
            )
    return found


def schema_error(schema: dict, instance) -> str | None:
    """Why the instance fails the schema, or None (valid, or a schema that cannot judge:
    a tool's broken schema is the tool's problem, not the model's)."""
    try:
        text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    validator = _validator(text) if len(text) <= MAX_SCHEMA_BYTES else None
    if validator is None:
        return None
    try:
        error = next(validator.iter_errors(instance), None)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None  # an instance the validator cannot take in (too deep, too large a number)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.instance_path)
    return f"{where + ': ' if where else ''}{error.message}"[:300]


@lru_cache(maxsize=512)
def _validator(schema: bytes):
    """A compiled validator per distinct schema (an agent sends the same tools with
    every request). Offline: a `$ref` to a URL is never fetched from the worker. The
    linear-time regex engine: a schema's `pattern` cannot stall detection."""
    try:
        return jsonschema_rs.validator_for(
            orjson.loads(schema), offline=True, pattern_options=jsonschema_rs.RegexOptions()
        )
    except (ValueError, jsonschema_rs.ReferencingError, RecursionError):
        return None  # not a schema the validator accepts


def _json(value):
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value
