"""The gateway's small operations: ctx.state and ctx.memory, backed by the database
(read through selectors, written through services)."""

import re

from execution import selectors, services


class OpError(Exception):
    """An answer the agent can handle: {"type", "message"}; `span` keeps what was known."""

    def __init__(self, type_: str, message: str, span: dict | None = None):
        super().__init__(message)
        self.type, self.message, self.span = type_, message, span or {}


STOPWORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "how",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "was",
        "what",
        "when",
        "where",
        "who",
        "why",
        "with",
    )
)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS}


def _key(args: dict) -> str:
    key = args.get("key")
    if not isinstance(key, str) or not key or len(key) > 200:
        raise OpError("invalid", "key must be a non-empty string of at most 200 characters")
    return key


def state_and_memory_ops(*, tenant_id: int, run_id: int, agent_id: int) -> dict:
    def state_get(args):
        row = selectors.run_state_get(run_id=run_id, key=_key(args))
        return {"found": row is not None, "value": row.value if row else None}, {}

    def state_set(args):
        services.run_state_set(
            tenant_id=tenant_id, run_id=run_id, key=_key(args), value=args.get("value")
        )
        return None, {}

    def memory_put(args):
        services.memory_item_put(
            tenant_id=tenant_id,
            agent_id=agent_id,
            key=_key(args),
            value=args.get("value"),
            text=args.get("text") or "",
        )
        return None, {}

    def memory_get(args):
        row = selectors.memory_item_get(agent_id=agent_id, key=_key(args))
        return {"found": row is not None, "value": row.value if row else None}, {}

    def memory_search(args):
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise OpError("invalid", "query must be a non-empty string")
        limit = min(max(int(args.get("limit") or 5), 1), 50)
        words = _words(query)
        # Word overlap: enough for an agent's notes, which are few per agent. A real
        # index (full-text, embeddings) can replace this behind the same operation.
        scored = []
        for item in selectors.memory_item_list(agent_id=agent_id):
            score = len(words & _words(item.text))
            if score:
                scored.append((score, item.key, item.value))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [{"key": k, "value": v, "score": s} for s, k, v in scored[:limit]], {}

    return {
        "state.get": state_get,
        "state.set": state_set,
        "memory.put": memory_put,
        "memory.get": memory_get,
        "memory.search": memory_search,
    }
