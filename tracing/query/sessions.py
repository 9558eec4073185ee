"""Session selectors: traces grouped by session (conversation) id, and the one
conversation a session's traces hold."""

import orjson
from django.db.models import Count, Max, Min, Q, Sum

from tracing.models import StatusCode, Trace
from tracing.query.filters import cursor_time, decode_cursor, encode_cursor
from tracing.selectors import Conversations, PayloadReader, span_stored_detail

MAX_TRACES = 1000


def session_page(*, cursor: str = "", limit: int = 50) -> tuple[list[dict], str | None]:
    """Sessions with their latest activity first, keyset-paginated."""
    qs = (
        Trace.objects.exclude(session_id="")
        .values("session_id")
        .annotate(
            trace_count=Count("id"),
            first_start=Min("start_time"),
            last_start=Max("start_time"),
            last_end=Max("end_time"),
            error_count=Count("id", filter=Q(status=StatusCode.ERROR)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            service_name=Max("service_name"),
            agent_name=Max("agent_name"),
        )
    )
    if cursor:
        when, session_id = decode_cursor(cursor, 2)
        last = cursor_time(when)
        qs = qs.filter(Q(last_start__lt=last) | Q(last_start=last, session_id__lt=session_id))
    rows = list(qs.order_by("-last_start", "-session_id")[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["last_start"].isoformat(), rows[-1]["session_id"])
    return rows, next_cursor


def session_traces(*, session_id: str) -> list[Trace]:
    """The session's traces in the order they started (the first MAX_TRACES)."""
    if "\x00" in session_id:
        return []  # no session id holds NUL (the database refuses it in a query, too)
    return list(
        Trace.objects.filter(session_id=session_id).order_by("start_time", "id")[:MAX_TRACES]
    )


def session_summary(traces: list[Trace]) -> dict:
    return {
        "session_id": traces[0].session_id,
        "trace_count": len(traces),
        "first_start": traces[0].start_time,
        "last_start": traces[-1].start_time,
        "last_end": max(t.end_time for t in traces),
        "error_count": sum(t.status == StatusCode.ERROR for t in traces),
        "input_tokens": sum(t.input_tokens for t in traces),
        "output_tokens": sum(t.output_tokens for t in traces),
        "service_name": traces[0].service_name,
        "agent_name": traces[0].agent_name,
    }


def _overlap(shown: list, sequence: list, window: int = 400) -> int:
    """How many leading messages of `sequence` are the conversation's tail already."""
    if sequence[: len(shown)] == shown:
        return len(shown)
    for k in range(min(len(shown), len(sequence), window), 0, -1):
        if shown[-k:] == sequence[:k]:
            return k
    return 0


# Said about a message when it was answered, and not repeated when the next step resends
# it (OpenLLMetry's output carries finish_reason, its next input does not).
_ANSWER_ONLY = ("finish_reason", "attributes")


def _sameness(message) -> bytes:
    """What makes two stored messages the same turn of the conversation."""
    if isinstance(message, dict):
        message = {k: v for k, v in message.items() if k not in _ANSWER_ONLY}
    return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


_REMOVED = {
    "role": "unknown",
    "parts": [{"type": "text", "content": "(payload removed by retention)"}],
}


def session_conversation(*, traces: list[Trace]) -> list[dict]:
    """The conversation across a session's traces, each message once.

    Every chat span resends the conversation so far, and a span nested under another
    (an SDK's own span under an instrumentation's) sends it again; a span's input and
    output line up with what was shown before, and only what follows is new. Messages
    are compared by their content, not their digest, so an answer stored with its
    finish reason is the same message when the next step resends it without. Returns
    [{"trace": Trace, "system": value|None, "messages": [message, ...],
    "span_ids": [span id each message first appeared in, ...]}] in trace order.
    """
    if not traces:
        return []
    reader = PayloadReader(traces[0].tenant_id)
    spans = reader.spans(
        [t.trace_id for t in traces],
        fields=("tenant_id", "trace_id", "span_id", "start_ns", "detail_packed"),
    )
    refs_of = {
        (span.trace_id, span.span_id): span_stored_detail(span=span).get("refs", {})
        for span in spans
    }
    inputs = Conversations(reader).inputs(refs_of)
    by_trace: dict = {}
    sequences: dict = {}
    for span in spans:
        key = (span.trace_id, span.span_id)
        refs = refs_of[key]
        if "in" in refs or "out" in refs:  # the spans that carry a conversation
            by_trace.setdefault(span.trace_id, []).append(span)
            sequences[key] = inputs.get(key, []) + list(refs.get("out", []))
    digests = {d for seq in sequences.values() for d in seq}
    systems = {refs["sys"] for refs in refs_of.values() if refs.get("sys")}
    reader.prefetch(digests | systems)
    values, same = {}, {}
    for digest in digests:
        try:
            values[digest] = reader.value(digest)
        except KeyError:
            values[digest] = _REMOVED
        same[digest] = _sameness(values[digest])
    shown: list[bytes] = []
    system_shown = None
    out = []
    for trace in traces:
        group = {"trace": trace, "system": None, "system_span_id": None}
        group.update(messages=[], span_ids=[])
        for span in by_trace.get(trace.trace_id, []):
            refs = refs_of[(span.trace_id, span.span_id)]
            if refs.get("sys") and refs["sys"] != system_shown:
                system_shown = refs["sys"]
                group["system"], group["system_span_id"] = reader.value(system_shown), span.span_id
            sequence = sequences[(span.trace_id, span.span_id)]
            keys = [same[d] for d in sequence]
            start = _overlap(shown, keys)
            for digest in sequence[start:]:
                group["messages"].append(values[digest])
                group["span_ids"].append(span.span_id)
            shown = shown + keys[start:]
        out.append(group)
    return out
