"""Counting an LLM call once when several spans of a trace report it.

Instrumentations nest: the anthropic SDK emits its own `messages.create` span inside
OpenLLMetry's or OpenInference's span for the same call, both with the call's usage.
Two reports are of one call when they carry the same `gen_ai.response.id` in one
trace, or one is the parent of the other and both carry usage. Whichever is seen first
counts (within a batch the outer one: callers go through spans by start time); the
trace's token sums at ingest (tracing.ingest.pipeline) and billing's cost roll-ups
(billing.costs) both decide with this one rule.

Only LLM operations are reports of a call, so an agent span that sums its calls'
usage is not taken for one.
"""

LLM_OPERATIONS = ("chat", "text_completion", "generate_content", "")
RESPONSE_ID_KEY = "gen_ai.response.id"


def call_key(attributes: dict) -> str:
    """The call's id as its span reports it ('' when none), as billing stores it."""
    return str(attributes.get(RESPONSE_ID_KEY) or "")[:255]


class CallReports:
    """The reports of LLM calls seen so far in some traces. Any hashable ids will do
    for traces and spans, as long as one caller uses one form."""

    __slots__ = ("calls", "parents", "spans")

    def __init__(self):
        self.spans: set = set()
        self.parents: set = set()
        self.calls: set = set()

    def add(self, trace_id, span_id, parent_span_id, key: str) -> None:
        """A report stored already, counted or not: a span related to it reports the
        same call."""
        self.spans.add((trace_id, span_id))
        if parent_span_id is not None:
            self.parents.add((trace_id, parent_span_id))
        if key:
            self.calls.add((trace_id, key))

    def counts(self, trace_id, span_id, parent_span_id, key: str) -> bool:
        """Whether this report is the first of its call; it is recorded either way."""
        again = (
            (trace_id, parent_span_id) in self.spans
            or (trace_id, span_id) in self.parents
            or (bool(key) and (trace_id, key) in self.calls)
        )
        self.add(trace_id, span_id, parent_span_id, key)
        return not again
