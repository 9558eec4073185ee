"""Turning trace data into what the templates show: durations, token counts, messages
as a conversation, redaction markers as markers."""

import json
import math
import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from tracing.query.filters import span_hex

# What the span path leaves where it redacted a value: [EMAIL:3f9a].
REDACTION = re.compile(r"\[([A-Z][A-Z0-9_]{1,31}):([0-9a-f]{2,16})\]")
LONG_TEXT = 1200  # characters shown before a text folds


def duration(ms) -> str:
    if ms is None:
        return ""
    ms = float(ms)
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 10_000:
        return f"{ms / 1000:.2f} s"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{int(minutes)}m {int(seconds):02d}s"


def count(n) -> str:
    if n is None:
        return ""
    n = int(n)
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def with_redactions(text: str) -> SafeString:
    """Escape text, then show each redaction placeholder as a marker, not as text."""

    def marker(match):
        kind, tag = match.groups()
        return (
            f'<span class="redacted" title="{kind} redacted before storage">'
            f'{kind}<span class="redacted-tag">{tag}</span></span>'
        )

    return mark_safe(REDACTION.sub(marker, str(escape(text))))  # noqa: S308 - escaped above


def pretty(value) -> str:
    """A JSON value (or a string holding JSON) as indented JSON; other text as is."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if not isinstance(parsed, dict | list):
            return value
        value = parsed
    return json.dumps(value, indent=2, ensure_ascii=False)


def _text_part(content) -> dict:
    text = content if isinstance(content, str) else pretty(content)
    return {"kind": "text", "html": with_redactions(text), "long": len(text) > LONG_TEXT}


def message_view(message) -> dict:
    """A GenAI semconv message ({"role", "parts"}) as the conversation template shows it."""
    if not isinstance(message, dict):
        return {"role": "unknown", "parts": [_text_part(message)]}
    role = str(message.get("role") or "unknown")
    parts = []
    raw_parts = message.get("parts")
    if raw_parts is None and "content" in message:
        raw_parts = [{"type": "text", "content": message["content"]}]
    for part in raw_parts or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(_text_part(part.get("content", "")))
        elif kind == "tool_call":
            arguments = pretty(part.get("arguments"))
            parts.append(
                {
                    "kind": "tool_call",
                    "name": part.get("name", ""),
                    "id": part.get("id", ""),
                    "html": with_redactions(arguments),
                }
            )
        elif kind == "tool_call_response":
            response = pretty(part.get("response"))
            parts.append(
                {
                    "kind": "tool_result",
                    "id": part.get("id", ""),
                    "html": with_redactions(response),
                    "long": len(response) > LONG_TEXT,
                }
            )
        else:
            parts.append(
                {"kind": "other", "type": kind or "part", "html": with_redactions(pretty(part))}
            )
    return {"role": role, "parts": parts}


def system_view(value) -> dict | None:
    """System instructions (a list of parts or a string) as one system message."""
    if value is None:
        return None
    if isinstance(value, list):
        return message_view({"role": "system", "parts": value})
    return message_view({"role": "system", "parts": [{"type": "text", "content": value}]})


def attribute_rows(attributes: dict) -> list[tuple[str, SafeString]]:
    rows = []
    for key in sorted(attributes):
        value = attributes[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append((key, with_redactions(text)))
    return rows


OPERATION_LABELS = {
    "chat": "chat",
    "text_completion": "llm",
    "generate_content": "llm",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "embeddings": "embed",
    "retrieval": "retrieve",
}


def operation_class(operation: str) -> str:
    return OPERATION_LABELS.get(operation or "", "other")


STATUS = {0: "unset", 1: "ok", 2: "error"}


def span_rows_html(
    rows: list[dict],
    *,
    t0: int,
    total_ns: int,
    collapse_below: int | None,
    start: int = 0,
    stop: int | None = None,
    costs: dict | None = None,
) -> str:
    """The tree rows of a trace view (name column and waterfall bar), as one string.

    Bars and labels carry their offsets as data- attributes (percent of the trace),
    which app.js sets through the CSSOM: the Content-Security-Policy allows no style
    attributes.

    Written out directly rather than through a template loop: a 2,000-span trace renders
    in a few milliseconds this way. Everything taken from the span is escaped.
    `collapse_below`: spans at this depth or deeper with children start collapsed (big
    traces), and their descendants start hidden. Only rows[start:stop] are written; the
    rows before are walked so a chunk's first rows know whether they start hidden.
    `costs`: billing's cost of each LLM call's span ({span id: span_costs' entry}).
    """
    costs = costs or {}
    total = max(total_ns, 1)
    out = []
    hide_deeper_than = None
    stop = len(rows) if stop is None else min(stop, len(rows))
    for index in range(stop):
        row = rows[index]
        depth = row["depth"]
        if hide_deeper_than is not None and depth <= hide_deeper_than:
            hide_deeper_than = None
        hidden = hide_deeper_than is not None
        has_kids = row["child_count"] > 0
        collapsed = has_kids and collapse_below is not None and depth >= collapse_below
        if collapsed and hide_deeper_than is None:
            hide_deeper_than = depth
        if index < start:
            continue
        sid = span_hex(row["span_id"])
        left = (row["start_ns"] - t0) / total * 100
        width = max((row["end_ns"] - row["start_ns"]) / total * 100, 0.15)
        status = STATUS.get(row["status_code"], "unset")
        op = operation_class(row["operation"])
        ms = (row["end_ns"] - row["start_ns"]) / 1e6
        toggle = (
            '<span class="toggle" aria-hidden="true"></span>'
            if has_kids
            else '<span class="toggle-space"></span>'
        )
        expanded = f' aria-expanded="{"false" if collapsed else "true"}"' if has_kids else ""
        kids = f'<span class="kids">{row["descendants"]}</span>' if has_kids else ""
        error = '<span class="dot-error" title="error"></span>' if status == "error" else ""
        tokens = ""
        if row["input_tokens"] is not None or row["output_tokens"] is not None:
            tokens = f'<span class="row-tokens">{count((row["input_tokens"] or 0) + (row["output_tokens"] or 0))} tok</span>'
        cost = costs.get(row["span_id"])
        if cost is not None:
            tokens += _cost_label(cost)
        label = _bar_label(left, width, duration(ms))
        badge = f'<span class="op op-{op}">{escape(op)}</span>' if op != "other" else ""
        out.append(
            f'<div class="span-row status-{status}" role="treeitem" id="span-{sid}" '
            f'data-span="{sid}" data-depth="{depth}" aria-level="{depth + 1}"{expanded} '
            f'aria-selected="false"{" hidden" if hidden else ""}>'
            f'<div class="span-name">{toggle}'
            f'{badge}<span class="span-label">{escape(row["name"])}</span>{kids}{error}{tokens}</div>'
            f'<div class="span-bar-cell"><div class="span-bar op-{op} bar-{status}" '
            f'data-left="{left:.3f}" data-width="{width:.3f}"></div>'
            f"{label}</div></div>"
        )
    return "".join(out)


def _cost_label(cost: dict) -> str:
    if cost["cost_unknown"]:
        return '<span class="row-cost" title="the model has no price">$?</span>'
    if not cost["counted"]:
        return '<span class="row-cost muted" title="this call is counted in another span">$—</span>'
    return f'<span class="row-cost">${escape(cost["cost_usd"])}</span>'


def _bar_label(left: float, width: float, text: str) -> str:
    """The duration beside a bar: after it, before it, or inside it, wherever it fits."""
    end = left + width
    if end <= 80:
        return f'<span class="span-ms" data-left="{end:.3f}">{escape(text)}</span>'
    if left >= 20:
        return f'<span class="span-ms before" data-right="{100 - left:.3f}">{escape(text)}</span>'
    return f'<span class="span-ms inside" data-right="{100 - end:.3f}">{escape(text)}</span>'


def axis_ticks(total_ms: float, count_: int = 5) -> list[dict]:
    """Ticks at round offsets (1, 2 or 5 times a power of ten) where they really fall,
    so each label says the time at its tick."""
    if total_ms <= 0:
        return [{"left": 0, "label": "0"}]
    rough = total_ms / count_
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    ticks, k = [], 0
    while k * step <= total_ms * (1 + 1e-9):
        at = k * step
        ticks.append({"left": round(at * 100 / total_ms, 3), "label": duration(at) if k else "0"})
        k += 1
    return ticks


def _chat_message(message) -> dict | None:
    """{"role", "content"} (OpenAI, LangChain, Anthropic blocks) or a GenAI message, for
    the conversation template; None when it is not a message."""
    if not isinstance(message, dict) or "role" not in message:
        return None
    if "parts" in message or isinstance(message.get("content"), str | None):
        return message_view(message)
    parts = []
    for block in message.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append({"type": "text", "content": block.get("text", "")})
        else:
            parts.append({"type": "text", "content": pretty(block)})
    return message_view({"role": message["role"], "parts": parts})


def io_view(value) -> dict | None:
    """A root span's input.value or output.value: a chat when it holds messages (a list
    of them, or an object with `messages`), indented JSON otherwise."""
    if value is None or value == "":
        return None
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
    listed = parsed.get("messages") if isinstance(parsed, dict) else parsed
    if isinstance(listed, list) and listed:
        views = [_chat_message(m) for m in listed]
        if all(views):
            return {"messages": views}
    return {"html": with_redactions(pretty(value))}
