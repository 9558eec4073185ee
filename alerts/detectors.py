"""The per-trace detectors: pure functions over a trace's small state and its new
calls, so they are tested without a database.

A call is keyed by what makes two calls "the same": a tool's name with its arguments
in canonical JSON (keys sorted, whitespace gone), or an LLM request's model, system
instructions and input messages (their payload digests: the same content hashes the
same). Keys are 12-hex-digit hashes, so the state stays small.
"""

import hashlib
from dataclasses import dataclass

import jsonschema
import orjson

MAX_KEYS = 256  # distinct calls remembered per trace; the rarest are forgotten first
RECENT = 6  # tool calls kept in order, enough for a 3-cycle seen twice
SEEN_BATCHES = 16


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


def tool_definitions(attributes: dict) -> dict[str, dict | None] | None:
    """The request's tools, name -> JSON schema (None: no schema), in any of the forms
    instrumentations record them, or None when the span names no tools at all."""
    defs: list = []
    raw = attributes.get("gen_ai.tool.definitions")
    if raw is not None:
        raw = _json(raw)
        defs.extend(raw if isinstance(raw, list) else [])
    for key, value in attributes.items():
        if key.startswith("llm.tools.") and key.endswith(".tool.json_schema"):
            defs.append(_json(value))  # OpenInference
    functions: dict[str, dict] = {}
    for key, value in attributes.items():
        if key.startswith("llm.request.functions."):  # OpenLLMetry
            index, _, field = key[len("llm.request.functions.") :].partition(".")
            functions.setdefault(index, {})[field] = _json(value)
    defs.extend(functions.values())
    if not defs:
        return None
    tools = {}
    for d in defs:
        if not isinstance(d, dict):
            continue
        fn = d.get("function") if isinstance(d.get("function"), dict) else d
        name = fn.get("name")
        if isinstance(name, str):
            schema = fn.get("parameters") or fn.get("input_schema") or d.get("input_schema")
            tools[name] = schema if isinstance(schema, dict) else None
    return tools


def tool_calls(output_messages) -> list[dict]:
    calls = []
    for message in output_messages or []:
        for part in message.get("parts", []) if isinstance(message, dict) else []:
            if isinstance(part, dict) and part.get("type") == "tool_call":
                calls.append(part)
    return calls


def hallucination_scan(span_id: str, tools: dict, output_messages) -> list[Finding]:
    """Tool calls of one response that name an undeclared tool or fail its schema."""
    found = []
    for call in tool_calls(output_messages):
        name = call.get("name") or ""
        if name not in tools:
            found.append(
                Finding(
                    cause=f"hallucinated_tool:{span_id}:{name}",
                    span_id=span_id,
                    summary=f"the model called {name!r}, which the request did not declare",
                    detail={"tool": name, "declared": sorted(tools)},
                    count=1,
                )
            )
            continue
        schema = tools[name]
        if schema is None:
            continue
        arguments = _json(call.get("arguments"))
        error = _schema_error(schema, {} if arguments is None else arguments)
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


def _schema_error(schema: dict, instance) -> str | None:
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls(schema).validate(instance)
    except jsonschema.ValidationError as exc:
        return exc.message[:300]
    except jsonschema.SchemaError:
        return None  # a tool's broken schema is the tool's problem, not the model's
    return None


def _json(value):
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value
