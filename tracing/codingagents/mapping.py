"""The one table from coding agents' documented events to spans.

Both agents change their telemetry often; everything that names one of their events or
attributes is here, with the versions it was written against:

- Claude Code 2.1.x, the "Monitoring" page (code.claude.com/docs/en/monitoring-usage),
  its event and attribute lists as of 2.1.121. Events are log records whose body is the
  event's name (`claude_code.api_request`), with `event.name`, `event.timestamp`,
  `event.sequence`, `session.id`, `prompt.id` and the user's attributes on each.
- Codex CLI 0.137 to 0.154, docs/config.md `[otel]`: events are log records with
  `event.name` (`codex.api_request`), `event.timestamp` and `conversation.id`; token
  counts come on the `codex.sse_event` of kind `response.completed`.

A record whose name is not in EVENTS is refused alone (partial success): Flightdeck keeps
coding agents' events, not general logs.
"""

from dataclasses import dataclass, field
from enum import StrEnum

CLAUDE_CODE_VERSION = "2.1.121"
CODEX_VERSION = "0.154.0"


class Shape(StrEnum):
    """What a record becomes."""

    PROMPT = "prompt"  # the root `invoke_agent` span of the prompt's trace
    CHAT = "chat"  # a `chat` span with the call's model, tokens and cost
    ERROR = "error"  # a span with status ERROR
    TOOL_DECISION = "tool_decision"  # a span: tool, decision, source
    TOOL_RESULT = "tool_result"  # an `execute_tool` span: duration, success
    STEP = "step"  # a span of its own, kept as sent
    FOLDED = "folded"  # nothing of its own: another record carries what it says


@dataclass(frozen=True, slots=True)
class Agent:
    name: str  # gen_ai.agent.name of its spans; budgets by agent use it
    provider: str  # gen_ai.provider.name of its chat spans: the price book's key
    session_key: str
    prompt_key: str | None  # None: traces are cut by prompt events and time


CLAUDE_CODE = Agent(
    name="claude-code", provider="anthropic", session_key="session.id", prompt_key="prompt.id"
)
CODEX = Agent(name="codex", provider="openai", session_key="conversation.id", prompt_key=None)


@dataclass(frozen=True, slots=True)
class Event:
    agent: Agent
    shape: Shape
    # Sent key -> span attribute (the GenAI conventions' names, which billing reads).
    # Sent keys not listed stay on the span as they came.
    renames: dict[str, str] = field(default_factory=dict)
    duration_key: str | None = "duration_ms"  # the record is written when the work ends
    prompt_text_key: str | None = None  # the prompt, only when the agent sends it
    success_key: str | None = None  # "true"/"false" or a bool; false is an error
    error_key: str | None = None  # its text is the span's status message
    # For FOLDED-by-default events: a value of `kind_key` that makes the record a span.
    kind_key: str | None = None
    kinds: dict[str, Shape] = field(default_factory=dict)


_CLAUDE_TOKENS = {
    "model": "gen_ai.request.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_creation_tokens": "gen_ai.usage.cache_creation.input_tokens",
}
_CODEX_TOKENS = {
    "model": "gen_ai.request.model",
    "input_token_count": "gen_ai.usage.input_tokens",
    "output_token_count": "gen_ai.usage.output_tokens",
    "cached_token_count": "gen_ai.usage.cache_read.input_tokens",
}

EVENTS: dict[str, Event] = {
    "claude_code.user_prompt": Event(
        CLAUDE_CODE, Shape.PROMPT, duration_key=None, prompt_text_key="prompt"
    ),
    # cost_usd (the agent's own figure) stays as sent; billing adds the price book's.
    "claude_code.api_request": Event(CLAUDE_CODE, Shape.CHAT, renames=_CLAUDE_TOKENS),
    "claude_code.api_error": Event(
        CLAUDE_CODE, Shape.ERROR, renames={"model": "gen_ai.request.model"}, error_key="error"
    ),
    "claude_code.tool_decision": Event(
        CLAUDE_CODE,
        Shape.TOOL_DECISION,
        renames={"tool_name": "gen_ai.tool.name", "tool_use_id": "gen_ai.tool.call.id"},
        duration_key=None,
    ),
    "claude_code.tool_result": Event(
        CLAUDE_CODE,
        Shape.TOOL_RESULT,
        renames={
            "tool_name": "gen_ai.tool.name",
            "tool_use_id": "gen_ai.tool.call.id",
            "tool_parameters": "gen_ai.tool.call.arguments",
        },
        success_key="success",
        error_key="error",
    ),
    "codex.conversation_starts": Event(CODEX, Shape.STEP, duration_key=None),
    "codex.user_prompt": Event(CODEX, Shape.PROMPT, duration_key=None, prompt_text_key="prompt"),
    # The HTTP attempt; its tokens come with the stream's response.completed below.
    "codex.api_request": Event(
        CODEX,
        Shape.STEP,
        renames={"model": "gen_ai.request.model"},
        error_key="error.message",
    ),
    # One record per streamed event: deltas say nothing the completed response does not.
    "codex.sse_event": Event(
        CODEX,
        Shape.FOLDED,
        renames=_CODEX_TOKENS,
        error_key="error.message",
        kind_key="event.kind",
        kinds={"response.completed": Shape.CHAT, "response.failed": Shape.ERROR},
    ),
    "codex.tool_decision": Event(
        CODEX,
        Shape.TOOL_DECISION,
        renames={"tool_name": "gen_ai.tool.name", "call_id": "gen_ai.tool.call.id"},
        duration_key=None,
    ),
    "codex.tool_result": Event(
        CODEX,
        Shape.TOOL_RESULT,
        renames={
            "tool_name": "gen_ai.tool.name",
            "call_id": "gen_ai.tool.call.id",
            "arguments": "gen_ai.tool.call.arguments",
            "output": "gen_ai.tool.call.result",
        },
        success_key="success",
    ),
}

# Attributes the span says in its own fields: not kept twice.
SPAN_FIELD_KEYS = ("event.name", "event.timestamp")

# Metrics the coding-agents page reads (Claude Code's names; Codex's are kept too).
METRIC_TOKENS = "claude_code.token.usage"  # attribute type: input, output, cacheRead, ...
METRIC_COST = "claude_code.cost.usage"  # USD, attribute model
METRIC_SESSIONS = "claude_code.session.count"
METRIC_LINES = "claude_code.lines_of_code.count"  # attribute type: added, removed
METRIC_COMMITS = "claude_code.commit.count"
METRIC_PULL_REQUESTS = "claude_code.pull_request.count"
METRIC_ACTIVE_TIME = "claude_code.active_time.total"
METRIC_EDIT_DECISIONS = "claude_code.code_edit_tool.decision"  # decision: accept, reject
# Tool acceptance: Claude Code's from the metric above (its tool_decision events say the
# same, so they are not counted again); Codex sends no metrics, so its rate is read
# from its folded codex.tool_decision spans (`decision` kept as sent, the tool in the
# span's labels).
CODEX_TOOL_DECISION = "codex.tool_decision"
DECISION_SOURCES = (METRIC_EDIT_DECISIONS, CODEX_TOOL_DECISION)
# Claude Code: accept, reject. Codex: approved, approved_execpolicy_amendment,
# approved_for_session, denied, abort (docs/config.md, "Event catalog").
ACCEPT_DECISIONS = ("accept", "approved", "approved_execpolicy_amendment", "approved_for_session")
REJECT_DECISIONS = ("reject", "denied", "abort")
# Who a coding agent's event acted for, first found: Claude Code always sends user.id
# (an installation id) and, once signed in, user.account_uuid and user.email; Codex
# sends user.account_id and user.email. A span's user (its trace's, the users page's,
# a user budget's) is the first of these on the record, else on its resource.
USER_KEYS = ("user.id", "user.account_uuid", "user.account_id", "user.email")

# Metric point and resource attributes that get a column of their own.
METRIC_COLUMNS = {
    "user.id": "user_id",
    "user.email": "user_email",
    "organization.id": "organization_id",
    "terminal.type": "terminal_type",
    "service.version": "service_version",
    "app.version": "service_version",
    "session.id": "session_id",
    "conversation.id": "session_id",
    "model": "model",
}


def event_for(names) -> tuple[str, Event] | tuple[None, None]:
    """The first of a record's candidate names (its event_name field, `event.name`, its
    body) that the table knows. Claude Code's `event.name` is the bare name
    (`api_request`) and its body the full one."""
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        if name in EVENTS:
            return name, EVENTS[name]
        if f"claude_code.{name}" in EVENTS:
            return f"claude_code.{name}", EVENTS[f"claude_code.{name}"]
    return None, None
