"""ctx.context.fit(messages, budget_tokens): make a long conversation fit the model.

The newest messages are kept whole, back to the oldest point that fits the budget and
where the conversation may start again (never between a tool_use and its
tool_result). What is dropped is summarised by the model (one more LLM call, which is
counted like any other) or, with summarise=False, replaced by a note.
Tokens are estimated at four characters each: cheap, and close enough for a budget.
"""

import json

SUMMARY_MAX_TOKENS = 400


def estimate_tokens(value) -> int:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return len(text) // 4 + 4


def _has_tool_result(message: dict) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _can_start(message: dict) -> bool:
    return message.get("role") == "user" and not _has_tool_result(message)


def _with_prefix(messages: list, text: str) -> list:
    """`text` as the first user turn (merged into the first message when it is a user's)."""
    first = messages[0] if messages else None
    if first and first.get("role") == "user":
        content = first["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        return [{**first, "content": [{"type": "text", "text": text}, *blocks]}, *messages[1:]]
    return [{"role": "user", "content": text}, *messages]


def fitted_messages(messages: list, *, dropped: int, note: str | None) -> list:
    """What a fit answers: the messages after the first `dropped`, led by `note`."""
    return _with_prefix(messages[dropped:], note) if dropped else messages


def fit(messages: list, budget_tokens: int, *, summarise: bool, summarise_call) -> dict:
    """`summarise_call(dropped_messages) -> str` asks the model for a summary."""
    total = sum(estimate_tokens(m) for m in messages)
    if total <= budget_tokens:
        return {"messages": messages, "dropped": 0, "summarised": False, "estimated_tokens": total}
    reserve = SUMMARY_MAX_TOKENS + 20 if summarise else 20
    kept_from = len(messages) - 1
    used = 0
    start = None
    for index in range(len(messages) - 1, -1, -1):
        used += estimate_tokens(messages[index])
        if used + reserve > budget_tokens:
            break
        if _can_start(messages[index]):
            start = index
        kept_from = index
    if start is None:
        # Nothing fits whole from a clean start: keep the last clean start anyway.
        starts = [i for i, m in enumerate(messages) if _can_start(m)]
        start = starts[-1] if starts else kept_from
    dropped = messages[:start]
    if summarise and dropped:
        note = "Summary of the earlier conversation: " + summarise_call(dropped)
    else:
        note = f"[{len(dropped)} earlier messages were left out to fit the context window]"
    fitted = fitted_messages(messages, dropped=len(dropped), note=note)
    return {
        "messages": fitted,
        "dropped": len(dropped),
        "summarised": bool(summarise and dropped),
        "estimated_tokens": sum(estimate_tokens(m) for m in fitted),
    }


def journal_form(result, messages: list):
    """A fit's result as the journal keeps it: the request's messages are the agent's own
    (the step's request hash covers them), so the fitted list is kept as how many of
    them were dropped and the note put before the rest. Copied whole, each step would
    store its conversation again and a long run's journal grow with its square.
    Anything that does not rebuild exactly (a fork's hand-written result) stays whole."""
    if not isinstance(result, dict):
        return result
    fitted, dropped = result.get("messages"), result.get("dropped")
    if not isinstance(fitted, list) or not isinstance(dropped, int):
        return result
    if dropped < 0 or dropped > len(messages):
        return result
    note = _note_of(fitted) if dropped else None
    if fitted_messages(messages, dropped=dropped, note=note) != fitted:
        return result
    kept = {k: v for k, v in result.items() if k != "messages"}
    return {**kept, "note": note}


def _note_of(fitted: list) -> str | None:
    """The note _with_prefix put first: a message of its own, or its first block."""
    content = fitted[0].get("content") if fitted and isinstance(fitted[0], dict) else None
    if isinstance(content, list) and content and isinstance(content[0], dict):
        content = content[0].get("text")
    return content if isinstance(content, str) else None


def from_journal(journaled, messages: list):
    """The result a fit answered, rebuilt from its journal form and the same request."""
    if not isinstance(journaled, dict) or "messages" in journaled or "note" not in journaled:
        return journaled  # kept whole
    if not isinstance(journaled.get("dropped"), int):
        return journaled
    rest = {k: v for k, v in journaled.items() if k != "note"}
    fitted = fitted_messages(messages, dropped=rest["dropped"], note=journaled["note"])
    return {"messages": fitted, **rest}
