"""The tool registry: built-in tools (http_request, python) and the tenant's webhook tools.

    spec = tool_resolve(name=..., allowed=manifest["tools"])   # ToolCallError "unknown_tool"
    problem = tool_validate(spec, arguments)                   # jsonschema
    result, attempts, used = tool_execute(spec=spec, arguments=arguments)

tool_execute retries timeouts, 5xx and 429 (honouring Retry-After, retry.py), then
calls the tool's declared fallback, then raises ToolCallError, which the gateway hands
to the agent as a tool error it can handle.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from execution import selectors
from execution.models import ToolDefinition
from execution.retry import UpstreamError, with_retries


class ToolCallError(Exception):
    def __init__(self, message: str, *, type_: str = "tool_error", attempts: int = 1):
        super().__init__(message)
        self.type = type_
        self.attempts = attempts


@dataclass
class ToolSpec:
    name: str
    schema: dict
    handler: Callable[[dict, "ToolSpec"], object]
    description: str = ""
    slow: bool = False
    timeout: float = 10.0
    fallback: str = ""
    rate_per_minute: float | None = None
    options: dict = field(default_factory=dict)  # webhook: url, credential, ...
    # Reaches outside the run (an HTTP request): its intent is journaled before the
    # call, so a call cut short by a crash is known to be in doubt.
    has_effects: bool = True
    # Safe to send again with the same idempotency key when in doubt (built-ins are;
    # a webhook when its definition says so).
    idempotent: bool = True

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)


@lru_cache(maxsize=1)
def _builtins() -> dict[str, ToolSpec]:
    from execution.tools.http import HTTP_REQUEST_SCHEMA, http_request
    from execution.tools.python import PYTHON_SCHEMA, python_run

    return {
        "http_request": ToolSpec(
            name="http_request",
            description="An HTTP request to a host on the tenant's allowlist.",
            schema=HTTP_REQUEST_SCHEMA,
            handler=http_request,
            timeout=15,
        ),
        "python": ToolSpec(
            name="python",
            description="Runs Python code in a fresh sandbox; returns its output.",
            schema=PYTHON_SCHEMA,
            handler=python_run,
            slow=True,  # a sandbox and an interpreter: runs on the tools queue
            timeout=30,
            has_effects=False,  # a fresh sandbox with no network
        ),
        "echo": ToolSpec(
            name="echo",
            description="Returns its arguments: for testing an agent's tool loop.",
            schema={"type": "object"},
            handler=lambda arguments, spec, idempotency_key: arguments,
            has_effects=False,
        ),
    }


BUILTIN_NAMES = ("http_request", "python", "echo")


def tool_spec_from_definition(definition: ToolDefinition) -> ToolSpec:
    from execution.tools.http import webhook_call

    return ToolSpec(
        name=definition.name,
        description=definition.description,
        schema=definition.schema or {"type": "object"},
        handler=webhook_call,
        slow=definition.slow,
        timeout=definition.timeout_seconds,
        fallback=definition.fallback,
        rate_per_minute=definition.rate_per_minute,
        idempotent=definition.idempotent,
        options={
            "url": definition.url,
            "credential": definition.credential,
            "credential_header": definition.credential_header,
            "credential_format": definition.credential_format,
        },
    )


def tool_lookup(*, name: str) -> ToolSpec | None:
    """A built-in or the current tenant's webhook tool named `name`."""
    builtins = _builtins()
    if name in builtins:
        return builtins[name]
    definition = selectors.tool_definition_find(name=name)
    return tool_spec_from_definition(definition) if definition else None


def tool_resolve(*, name: str, allowed: list[str]) -> ToolSpec:
    if not isinstance(name, str) or name not in allowed:
        raise ToolCallError(
            f"unknown tool {name!r}: this agent may call {sorted(allowed)}", type_="unknown_tool"
        )
    spec = tool_lookup(name=name)
    if spec is None:
        raise ToolCallError(f"unknown tool {name!r}: it is not defined", type_="unknown_tool")
    return spec


def schema_problem(schema: dict) -> str | None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON schema: {exc.message}"
    return None


def tool_validate(spec: ToolSpec, arguments) -> str | None:
    errors = sorted(spec.validator.iter_errors(arguments), key=lambda e: list(e.path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.path) or "(arguments)"
    return f"invalid arguments for {spec.name}: {where}: {first.message}"


def tool_execute(
    *, spec: ToolSpec, arguments: dict, fallback: bool = True, idempotency_key: str = ""
) -> tuple[object, int, str]:
    """(result, attempts, name of the tool that answered). A fallback is one level deep:
    its own fallback is not followed, so fallbacks cannot chain into a loop. Retries and
    the fallback carry the same `idempotency_key`: they are the same call."""
    try:
        result, attempts = with_retries(lambda: spec.handler(arguments, spec, idempotency_key))
        return result, attempts, spec.name
    except UpstreamError as exc:
        failure = ToolCallError(str(exc), attempts=getattr(exc, "attempts", 1))
    if fallback and spec.fallback:
        backup = tool_lookup(name=spec.fallback)
        if backup is not None and tool_validate(backup, arguments) is None:
            try:
                result, attempts, used = tool_execute(
                    spec=backup,
                    arguments=arguments,
                    fallback=False,
                    idempotency_key=idempotency_key,
                )
                return result, failure.attempts + attempts, used
            except ToolCallError as exc:
                failure = ToolCallError(
                    f"{failure}; fallback {spec.fallback}: {exc}",
                    attempts=failure.attempts + exc.attempts,
                )
    raise failure
