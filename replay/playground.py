"""The playground: any recorded LLM call, opened as an editable request and run again.

    stored chat span (a managed run's, or an external agent's: OpenLLMetry, OpenInference,
    GenAI semconv events; tracing has normalised its messages to GenAI semconv)
        │  playground_request: semconv messages -> Anthropic messages, system prompt,
        │  model, tools and parameters; the text is what the store holds (redacted)
        ▼
    edited request ── playground_check: the Messages API's shape, or PlaygroundInvalid
        ▼                naming the field
    playground_run: the tenant's rate limit ─▶ the budget hook's reserve (run_id None,
        agent "playground") ─▶ PlaygroundRun row ─▶ execution.llm.messages_create (the
        gateway's client and retries) ─▶ settle ─▶ a new trace through the span path
        (root + chat span, linked to the source span) ─▶ the row's usage and cost

The row exists before the new trace's spans are stored: costing prices the chat span
like any other and, finding the row, does not charge the budgets a second time.
"""

import json
import re
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from billing.prices import cache as price_cache
from billing.prices import price_for
from controlplane.services import Actor
from execution import llm, ratelimit
from execution.budget import budget_hook
from execution.gateway import chat_span, chat_span_answered
from execution.retry import UpstreamError
from execution.spans import span_exporter
from replay.models import PlaygroundRun, PlaygroundRunStatus
from tracing import selectors as tracing_selectors
from tracing.query.filters import span_hex

AGENT = "playground"  # the agent its calls answer to: a budget on it caps the playground
SERVICE = "flightdeck-playground"
PROVIDER = "anthropic"  # the gateway's upstream
LLM_OPERATIONS = ("chat", "text_completion", "generate_content")
DEFAULT_MAX_TOKENS = 1024
MAX_TOKENS = 128_000
MAX_MESSAGES = 1000
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 16
PARAMS = {
    "model", "system", "messages", "max_tokens", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice",
}  # fmt: skip
FIELDS = PARAMS | {"source"}
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class PlaygroundInvalid(Exception):
    """The request is not one the playground can send; `field` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class PlaygroundRateLimited(Exception):
    def __init__(self, retry_after: float, per_minute: int):
        super().__init__(f"the playground's rate limit of {per_minute} calls a minute is reached")
        self.retry_after = retry_after


class NotAnLLMCall(PlaygroundInvalid):
    pass


# --- the editable request of a stored span -------------------------------------------


def _json(value):
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _number(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text_of(parts) -> str:
    out = []
    for part in parts or []:
        if isinstance(part, dict) and part.get("type") == "text":
            out.append(str(part.get("content", "")))
        elif isinstance(part, str):
            out.append(part)
    return "\n".join(out)


def _block(part: dict, notes: list[str]) -> dict | None:
    """One GenAI semconv part as an Anthropic content block."""
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("content", ""))}
    if kind == "tool_call":
        arguments = _json(part.get("arguments"))
        return {
            "type": "tool_use",
            "id": str(part.get("id") or f"toolu_{secrets.token_hex(8)}"),
            "name": str(part.get("name") or "tool"),
            "input": arguments if isinstance(arguments, dict) else {"value": arguments},
        }
    if kind == "tool_call_response":
        response = part.get("response")
        if isinstance(response, list) and all(
            isinstance(b, dict) and b.get("type") == "text" for b in response
        ):
            content = [{"type": "text", "text": str(b.get("text", ""))} for b in response]
        else:
            content = response if isinstance(response, str) else json.dumps(response, default=str)
        return {"type": "tool_result", "tool_use_id": str(part.get("id") or ""), "content": content}
    notes.append(f"a {kind or 'typeless'} part of the recorded messages was left out")
    return None


def anthropic_messages(semconv: list) -> tuple[list[dict], list[str], list[str]]:
    """GenAI semconv messages as the Messages API takes them: (messages, the texts of
    system messages found among them, notes on what could not be carried over). A tool
    message becomes a user turn of tool results; turns of one role are merged."""
    messages, system, notes = [], [], []
    for message in semconv or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role") or "user")
        parts = message.get("parts") or []
        if role in ("system", "developer"):
            system.append(_text_of(parts))
            continue
        role = "assistant" if role in ("assistant", "model") else "user"
        blocks = [b for p in parts if isinstance(p, dict) and (b := _block(p, notes))]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    for message in messages:
        blocks = message["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            message["content"] = blocks[0]["text"]
    return messages, system, notes


def _tools(attributes: dict) -> list[dict]:
    """Tool definitions from GenAI semconv, OpenLLMetry or OpenInference attributes."""
    tools = []
    for tool in _json(attributes.get("gen_ai.tool.definitions")) or []:
        if isinstance(tool, dict) and tool.get("name"):
            tools.append(
                {
                    "name": str(tool["name"]),
                    "description": str(tool.get("description") or ""),
                    "input_schema": _json(tool.get("input_schema") or tool.get("parameters"))
                    or {"type": "object"},
                }
            )
    i = 0
    while f"llm.request.functions.{i}.name" in attributes:  # OpenLLMetry
        prefix = f"llm.request.functions.{i}."
        schema = _json(
            attributes.get(prefix + "input_schema") or attributes.get(prefix + "parameters")
        )
        tools.append(
            {
                "name": str(attributes[prefix + "name"]),
                "description": str(attributes.get(prefix + "description") or ""),
                "input_schema": schema if isinstance(schema, dict) else {"type": "object"},
            }
        )
        i += 1
    i = 0
    while f"llm.tools.{i}.tool.json_schema" in attributes:  # OpenInference
        schema = _json(attributes[f"llm.tools.{i}.tool.json_schema"])
        if isinstance(schema, dict) and schema.get("name"):
            tools.append(
                {
                    "name": str(schema["name"]),
                    "description": str(schema.get("description") or ""),
                    "input_schema": schema.get("input_schema")
                    or schema.get("parameters")
                    or {"type": "object"},
                }
            )
        i += 1
    return [t for t in tools if TOOL_NAME.fullmatch(t["name"])][:MAX_TOOLS]


def _params(attributes: dict) -> dict:
    """max_tokens, temperature, top_p, top_k and stop sequences as the span recorded
    them (GenAI semconv, or OpenInference's invocation parameters)."""
    invocation = _json(attributes.get("llm.invocation_parameters"))
    invocation = invocation if isinstance(invocation, dict) else {}
    out = {}
    for name in ("max_tokens", "temperature", "top_p", "top_k"):
        value = _number(attributes.get(f"gen_ai.request.{name}"))
        out[name] = value if value is not None else _number(invocation.get(name))
    stop = attributes.get("gen_ai.request.stop_sequences") or invocation.get("stop_sequences")
    stop = _json(stop)
    if isinstance(stop, str):
        stop = [stop]
    out["stop_sequences"] = [str(s) for s in stop] if isinstance(stop, list | tuple) else None
    if not isinstance(out["max_tokens"], int) or out["max_tokens"] <= 0:
        out["max_tokens"] = DEFAULT_MAX_TOKENS
    return out


def known_models(*, tenant_id: int) -> list[str]:
    """The Anthropic models the tenant's prices list: the playground runs only those,
    so every call it makes has a cost and can be held to a budget."""
    book = price_cache.book()
    names = {p.model for dated in book.by_name.values() for _, p in dated if p.provider == PROVIDER}
    names |= {p.model for p in price_cache.overrides(tenant_id).values() if p.provider == PROVIDER}
    return sorted(names)


def _is_known(model: str, tenant_id: int) -> bool:
    price = price_for(
        tenant_id=tenant_id, provider=PROVIDER, model=model, day=timezone.now().date()
    )
    return price is not None and price.provider == PROVIDER


def source_check(*, span, field: str = "span_id") -> dict:
    """The span's labels, or NotAnLLMCall: only an LLM call can be opened."""
    labels = tracing_selectors.span_labels(span=span)
    if labels["operation"] not in LLM_OPERATIONS:
        raise NotAnLLMCall(
            field, f"span {span_hex(span.span_id)} is a {labels['operation'] or 'plain'} "
            "span, not an LLM call"
        )  # fmt: skip
    return labels


def playground_request(*, span) -> dict:
    """The editable request of a stored LLM call: the Messages API's fields, filled
    from what the span recorded, and where it came from. Raises NotAnLLMCall."""
    labels = source_check(span=span)
    detail = tracing_selectors.span_detail(span=span)
    messages, system, notes = anthropic_messages(detail["input_messages"] or [])
    system = [_text_of(detail["system_instructions"] or [])] + system
    recorded = labels["request_model"] or labels["response_model"]
    model = recorded
    if not recorded or not _is_known(recorded, span.tenant_id):
        model = settings.EXECUTION_DEFAULT_MODEL
        notes.append(
            f"the call was made to {recorded or 'an unnamed model'}"
            f"{' (' + labels['provider'] + ')' if labels['provider'] else ''}, which the "
            f"playground cannot call: {model} is filled in instead"
        )
    output, _, _ = anthropic_messages(detail["output_messages"] or [])
    return {
        "source": {
            "trace_id": span.trace_id.hex,
            "span_id": span_hex(span.span_id),
            "service": labels["service_name"],
            "agent": labels["agent_name"],
            "run_id": span.run_id,
            "model": recorded,
            "provider": labels["provider"],
        },
        "model": model,
        "system": "\n\n".join(s for s in system if s),
        "messages": messages,
        "tools": _tools(detail["attributes"]),
        **_params(detail["attributes"]),
        "recorded_output": output,
        "redactions": span.redactions or {},
        "notes": notes,
    }


# --- checking an edited request ------------------------------------------------------


def _check_block(block, where: str, role: str) -> None:
    if not isinstance(block, dict):
        raise PlaygroundInvalid("messages", f"{where} is not an object")
    kind = block.get("type")
    shapes = {
        "text": {"type": str, "text": str},
        "tool_use": {"type": str, "id": str, "name": str, "input": dict},
        "tool_result": {"type": str, "tool_use_id": str, "content": (str, list)},
    }
    if kind not in shapes:
        raise PlaygroundInvalid(
            "messages", f"{where}.type must be text, tool_use or tool_result, not {kind!r}"
        )
    if kind == "tool_use" and role != "assistant":
        raise PlaygroundInvalid("messages", f"{where}: tool_use blocks are the assistant's")
    if kind == "tool_result" and role != "user":
        raise PlaygroundInvalid("messages", f"{where}: tool_result blocks are the user's")
    allowed = set(shapes[kind]) | ({"is_error"} if kind == "tool_result" else set())
    extra = set(block) - allowed
    if extra:
        raise PlaygroundInvalid("messages", f"{where} has unknown keys {sorted(extra)}")
    for key, types in shapes[kind].items():
        if not isinstance(block.get(key), types):
            raise PlaygroundInvalid("messages", f"{where}.{key} is missing or of the wrong type")
    if kind == "text" and not block["text"].strip():
        raise PlaygroundInvalid("messages", f"{where}.text is empty")
    if kind == "tool_result" and isinstance(block["content"], list):
        for j, inner in enumerate(block["content"]):
            if not (isinstance(inner, dict) and inner.get("type") == "text"):
                raise PlaygroundInvalid("messages", f"{where}.content[{j}] is not a text block")
            if set(inner) != {"type", "text"} or not isinstance(inner["text"], str):
                raise PlaygroundInvalid("messages", f"{where}.content[{j}] needs just a text")
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise PlaygroundInvalid("messages", f"{where}.is_error is not a boolean")


def _check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise PlaygroundInvalid("messages", "a non-empty list of {role, content} is needed")
    if len(messages) > MAX_MESSAGES:
        raise PlaygroundInvalid("messages", f"{len(messages)} messages; at most {MAX_MESSAGES}")
    for i, message in enumerate(messages):
        where = f"[{i}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise PlaygroundInvalid("messages", f"{where} must be an object of role and content")
        role, content = message["role"], message["content"]
        if role not in ("user", "assistant"):
            raise PlaygroundInvalid("messages", f"{where}.role must be user or assistant")
        if i == 0 and role != "user":
            raise PlaygroundInvalid("messages", "the first message must be the user's")
        if isinstance(content, str):
            if not content.strip():
                raise PlaygroundInvalid("messages", f"{where}.content is empty")
        elif isinstance(content, list) and content:
            for j, block in enumerate(content):
                _check_block(block, f"{where}.content[{j}]", role)
        else:
            raise PlaygroundInvalid("messages", f"{where}.content must be text or a list of blocks")


def _check_range(body: dict, name: str, low, high, *, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise PlaygroundInvalid(name, f"must be {kind} from {low} to {high}")


def _check_tools(tools, tool_choice) -> None:
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
            raise PlaygroundInvalid("tools", f"a list of at most {MAX_TOOLS} tools")
        for i, tool in enumerate(tools):
            if (
                not isinstance(tool, dict)
                or not set(tool) <= {"name", "description", "input_schema"}
                or not isinstance(tool.get("name"), str)
                or not TOOL_NAME.fullmatch(tool["name"])
                or not isinstance(tool.get("input_schema"), dict)
                or not isinstance(tool.get("description", ""), str)
            ):
                raise PlaygroundInvalid(
                    "tools",
                    f"[{i}] must be {{name (letters, digits, _ and -), description, "
                    "input_schema (an object)}",
                )
    if tool_choice is not None:
        names = {t["name"] for t in tools or []}
        kind = tool_choice.get("type") if isinstance(tool_choice, dict) else None
        if kind not in ("auto", "any", "tool", "none") or (
            kind == "tool" and tool_choice.get("name") not in names
        ):
            raise PlaygroundInvalid(
                "tool_choice", "{type: auto | any | none} or {type: tool, name: one of tools}"
            )


def playground_check(*, body: dict, tenant_id: int) -> dict:
    """The Messages API parameters of an edited request, or PlaygroundInvalid."""
    if not isinstance(body, dict):
        raise PlaygroundInvalid("body", "a JSON object is needed")
    unknown = set(body) - FIELDS
    if unknown:
        raise PlaygroundInvalid(
            sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(FIELDS))})"
        )
    size = len(json.dumps(body, default=str))
    if size > settings.PLAYGROUND_MAX_REQUEST_BYTES:
        raise PlaygroundInvalid(
            "messages",
            f"the request is {size} bytes of JSON, over the limit of "
            f"{settings.PLAYGROUND_MAX_REQUEST_BYTES}",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise PlaygroundInvalid("model", "a model name is needed")
    if len(model) > 255 or not _is_known(model, tenant_id):
        known = ", ".join(known_models(tenant_id=tenant_id)) or "none"
        raise PlaygroundInvalid(
            "model", f"{model[:80]!r} is not a model with a price (known: {known})"
        )
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise PlaygroundInvalid("system", "the system prompt is text")
    _check_messages(body.get("messages"))
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    _check_range({"max_tokens": max_tokens}, "max_tokens", 1, MAX_TOKENS, integer=True)
    _check_range(body, "temperature", 0, 1)
    _check_range(body, "top_p", 0, 1)
    _check_range(body, "top_k", 1, 1_000_000, integer=True)
    stop = body.get("stop_sequences")
    if stop is not None and (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s and len(s) <= 256 for s in stop)
    ):
        raise PlaygroundInvalid(
            "stop_sequences", f"a list of at most {MAX_STOP_SEQUENCES} non-empty strings"
        )
    _check_tools(body.get("tools"), body.get("tool_choice"))
    params = {k: v for k, v in body.items() if k in PARAMS and v not in (None, "", [])}
    params["model"], params["max_tokens"] = model.strip(), max_tokens
    return params


# --- running it ----------------------------------------------------------------------


@dataclass(slots=True)
class PlaygroundResult:
    run: PlaygroundRun
    message: dict | None  # the model's answer, as the Messages API gave it
    error: str = ""  # why the upstream did not answer


class _FixedTraceId(RandomIdGenerator):
    def __init__(self, trace_id: int):
        self.trace_id = trace_id

    def generate_trace_id(self) -> int:
        return self.trace_id


def _rate_limit(tenant_id: int) -> None:
    per_minute = settings.PLAYGROUND_LLM_PER_MINUTE
    wait = ratelimit.acquire(f"{tenant_id}:playground:llm", per_minute)
    if wait > 0:
        raise PlaygroundRateLimited(wait, per_minute)


def _cost(tenant_id: int, message: dict) -> int | None:
    usage = message.get("usage") or {}
    price = price_for(
        tenant_id=tenant_id,
        provider=PROVIDER,
        model=message.get("model", ""),
        day=timezone.now().date(),
    )
    if price is None:
        return None
    return price.cost_nusd(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read=int(usage.get("cache_read_input_tokens") or 0),
        cache_write=int(usage.get("cache_creation_input_tokens") or 0),
    )


def _record(*, tenant_id: int, trace_id: int, source, params: dict, message, error: str,
            start_ns: int, attempts: int) -> None:  # fmt: skip
    """The call as a trace of its own, through the span path: a root span and its chat
    span, linked to the source span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE}),
        id_generator=_FixedTraceId(trace_id),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("flightdeck.playground")
    source_hex = (source.trace_id.hex, span_hex(source.span_id))
    linked = {
        "flightdeck.playground.source_trace": source_hex[0],
        "flightdeck.playground.source_span": source_hex[1],
        "gen_ai.agent.name": AGENT,
    }
    link = Link(
        SpanContext(
            int(source_hex[0], 16), int(source_hex[1], 16), True, TraceFlags(TraceFlags.SAMPLED)
        ),
        {"flightdeck.link": "playground.source"},
    )
    root = tracer.start_span(
        f"playground {params['model']}", start_time=start_ns, attributes=linked
    )
    attributes = chat_span(params)
    if message is not None:
        chat_span_answered(attributes, message, attempts)
    name = attributes.pop("name")
    attributes = {**linked, **{k: v for k, v in attributes.items() if v is not None}}
    span = tracer.start_span(
        name,
        context=trace.set_span_in_context(root),
        kind=trace.SpanKind.CLIENT,
        start_time=start_ns,
        attributes=attributes,
        links=[link],
    )
    if error:
        span.set_attribute("error.type", "llm_error")
        for failed in (span, root):
            failed.set_status(Status(StatusCode.ERROR, error[:500]))
    span.end()
    root.end()
    provider.shutdown()
    exporter = span_exporter(tenant_id)
    if exporter is not None:
        exporter.export(memory.get_finished_spans())


def playground_run(*, source, body: dict, actor: Actor) -> PlaygroundResult:
    """Send an edited copy of `source`'s request through the gateway's LLM path and
    record it. Raises PlaygroundInvalid, PlaygroundRateLimited or BudgetRefused (the
    message names the budget); an upstream failure is recorded and returned."""
    tenant_id = source.tenant_id
    source_check(span=source, field="source")
    params = playground_check(body=body, tenant_id=tenant_id)
    _rate_limit(tenant_id)
    hook = budget_hook()
    reservation = None
    if hook is not None:
        reservation = hook.reserve(
            run_id=None, kind="llm", request=params, tenant_id=tenant_id, agent=AGENT
        )
    trace_id = secrets.randbits(128) or 1
    start_ns = time.time_ns()
    message, error, attempts = None, "", 0
    try:
        run = PlaygroundRun.objects.create(
            tenant_id=tenant_id,
            trace_id=format(trace_id, "032x"),
            source_trace_id=source.trace_id.hex,
            source_span_id=span_hex(source.span_id),
            model=params["model"],
            requested_by=actor.user,
            api_key=actor.api_key,
        )
        message, attempts = llm.messages_create(params)
    except UpstreamError as exc:
        error = str(exc)
    finally:
        if hook is not None:
            hook.settle(reservation=reservation, usage=(message or {}).get("usage"))
            hook.flush()
    _record(
        tenant_id=tenant_id, trace_id=trace_id, source=source, params=params,
        message=message, error=error, start_ns=start_ns, attempts=attempts,
    )  # fmt: skip
    usage = (message or {}).get("usage") or {}
    run.status = PlaygroundRunStatus.ERROR if error else PlaygroundRunStatus.OK
    run.input_tokens = usage.get("input_tokens")
    run.output_tokens = usage.get("output_tokens")
    run.cost_nusd = _cost(tenant_id, message) if message else None
    run.save(update_fields=["status", "input_tokens", "output_tokens", "cost_nusd"])
    return PlaygroundResult(run=run, message=message, error=error)
