"""The run's step journal as the gateway consults it: every call is identified, looked
up, and (when it went live) inserted before the agent sees its answer.

A step's identity is (request hash, occurrence): the n-th call of the run with exactly
this request. It does not depend on the order in which the agent's threads reach the
gateway, so a resumed or replayed agent that makes 8 tool calls at once is answered
each call's own result whichever thread arrives first. Calls with the same request are
interchangeable by construction: they get the recorded answers in the order they arrive.
`step` is only the arrival order, kept for reading the journal.
"""

import difflib
import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass

from django.db.models import BinaryField, Case, Max, When
from django.db.models.functions import Cast

from execution import selectors
from execution.models import Run
from replay.models import JournalStep
from replay.sealing import Sealed, unseal


def request_hash(op: str, args: dict) -> str:
    canonical = json.dumps(
        {"op": op, "args": args}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True, frozen=True)
class StepIdentity:
    step: int  # arrival order in this run
    request_hash: str
    occurrence: int  # 1 for the first call with this request, 2 for the second...
    thread: str  # the agent's thread that asked
    thread_seq: int  # that thread's own count of calls

    def idempotency_key(self, run_id: int) -> str:
        """What a tool receives to recognise a call it has already carried out."""
        return f"run-{run_id}-{self.request_hash[:32]}-{self.occurrence}"


class Journal:
    def __init__(self, *, run: Run):
        self.run_id = run.pk
        self.lock = threading.Lock()
        steps = selectors.run_steps(run=run)
        # done with result, in one read: loaded later, a row completed meanwhile (by a
        # previous owner still finishing its call) would be served with the result it
        # had when read, none.
        fields = ("step", "request_hash", "occurrence", "result", "is_error", "kind", "done")
        recorded = steps.only(*fields)
        self.recorded = {(s.request_hash, s.occurrence): s for s in recorded}
        # New steps of a resumed run are numbered after the ones it already has.
        self.next = (steps.aggregate(m=Max("step"))["m"] or 0) + 1
        self.seen: Counter[str] = Counter()
        from replay.selectors import run_link_of

        link = run_link_of(run_id=run.pk)
        self.source = SourceJournal(link=link) if link is not None else None

    def identify(self, digest: str, *, thread: str, thread_seq: int) -> StepIdentity:
        with self.lock:
            step, self.next = self.next, self.next + 1
            self.seen[digest] += 1
            occurrence = self.seen[digest]
        return StepIdentity(step, digest, occurrence, thread, thread_seq)

    def recorded_step(self, identity: StepIdentity) -> JournalStep | None:
        """The journaled answer to this very call, if the run has one."""
        return self.recorded.get((identity.request_hash, identity.occurrence))


@dataclass(slots=True)
class SourceAnswer:
    """What a replay or a fork does with one call, from its source's journal."""

    kind: str  # "live", "serve" (row), "result" (value), "request" (value), "diverged"
    row: "SourceStep | None" = None
    value: object = None
    report: dict | None = None


LIVE = SourceAnswer("live")


_UNREAD = object()


class SourceStep:
    """A done step of the source's journal as a replay reads it at its start: its values
    as stored (sealed), each opened when first asked for. The results are opened in one
    pass while the replay's sandbox boots (SourceJournal.open_results); an LLM call's
    request (small: its conversation is named, not copied) when the replay's own row and
    span of the answer are made, after the answer is sent; any other request only for a
    divergence report, read then."""

    __slots__ = (
        "pk",
        "step",
        "kind",
        "request_hash",
        "occurrence",
        "thread",
        "thread_seq",
        "is_error",
        "sealed_result",
        "sealed_request",
        "_result",
        "_request",
    )
    FIELDS = ("pk", "step", "kind", "request_hash", "occurrence", "thread", "thread_seq")

    def __init__(self, *values):
        *fields, self.is_error, result, request = values
        for name, value in zip(self.FIELDS, fields, strict=True):
            setattr(self, name, value)
        # The replay's row of this answer takes these bytes as they are, rather than
        # sealing the same value again on every step.
        self.sealed_result = None if result is None else Sealed(result)
        self.sealed_request = None if request is None else Sealed(request)
        self._result = self._request = _UNREAD

    @property
    def result(self):
        # Two threads may open it at once: the same value either way.
        if self._result is _UNREAD:
            self._result = None if self.sealed_result is None else unseal(self.sealed_result)
        return self._result

    @property
    def request(self):
        if self._request is _UNREAD:
            if self.sealed_request is not None:
                self._request = unseal(self.sealed_request)
            else:
                self._request = (
                    JournalStep.objects.filter(pk=self.pk).values_list("request", flat=True).first()
                )
        return self._request

    def llm_request(self):
        """The LLM call's journaled request (None for another kind of call): an answered
        call journals its source's request form and refers to its chat span."""
        return self.request if self.kind == "llm.messages" else None


class SourceJournal:
    """The journal of the run a replay or fork was made from, read once at its start, in
    one query, its values opened as they are needed (SourceStep)."""

    def __init__(self, *, link):
        self.link = link
        stored = BinaryField()  # the column's bytes, not opened (SealedJSONField would)
        rows = [
            SourceStep(*values)
            for values in selectors.run_steps_of(run_id=link.source_id)
            .filter(done=True)
            .annotate(
                sealed_result=Cast("result", output_field=stored),
                sealed_request=Case(
                    When(kind="llm.messages", then=Cast("request", output_field=stored)),
                    default=None,
                    output_field=stored,
                ),
            )
            .values_list(*SourceStep.FIELDS, "is_error", "sealed_result", "sealed_request")
        ]
        self.fork_step = link.fork_step if link.kind == "fork" else None
        self.by_identity = {(s.request_hash, s.occurrence): s for s in rows}
        self.by_thread = {(s.thread, s.thread_seq): s for s in rows}
        self.by_step = {s.step: s for s in rows}
        fork_row = self.by_step.get(self.fork_step) if self.fork_step else None
        self.fork_identity = (fork_row.request_hash, fork_row.occurrence) if fork_row else None

    def open_results(self) -> None:
        """Open every result now (the runner calls it while the sandbox boots), rather
        than one on each answered call's path."""
        for row in self.by_step.values():
            row.result  # noqa: B018 - the property opens and keeps it

    def answer(self, identity: StepIdentity, op: str, args: dict) -> SourceAnswer:
        key = (identity.request_hash, identity.occurrence)
        if self.fork_step is not None:
            if key == self.fork_identity:
                override = self.link.override or {}
                if "result" in override:
                    return SourceAnswer("result", value=override["result"])
                return SourceAnswer("request", value=override.get("request") or {})
            row = self.by_identity.get(key)
            return SourceAnswer("serve", row=row) if row and row.step < self.fork_step else LIVE
        row = self.by_identity.get(key)
        if row is not None:
            return SourceAnswer("serve", row=row)
        return SourceAnswer("diverged", report=self.report(identity, op, args))

    def report(self, identity: StepIdentity, op: str, args: dict) -> dict:
        """The first call the source never made, beside the call it made in its place:
        the one its thread made at the same point of its own sequence (else the one
        that arrived at the same step). Both in their readable form: redacted, an LLM
        call's conversation as the span path holds it (the recorded one read back from
        the source's chat span), so the diff shows the messages that changed."""
        from replay.selectors import request_readable

        recorded = self.by_thread.get((identity.thread, identity.thread_seq)) or self.by_step.get(
            identity.step
        )
        source = self.link.source
        new = {"op": op, "args": request_readable(tenant_id=source.tenant_id, op=op, args=args)}
        old = None
        if recorded is not None:
            readable = request_readable(
                tenant_id=source.tenant_id,
                op=recorded.kind,
                journaled=recorded.request,
                trace_id=source.trace_id,
            )
            old = {"op": recorded.kind, "args": readable}
        return {
            "step": identity.step,
            "thread": identity.thread,
            "thread_seq": identity.thread_seq,
            "recorded_step": recorded.step if recorded else None,
            "recorded_request": old,
            "request": new,
            "diff": readable_diff(old, new),
        }


def readable_diff(old, new) -> str:
    def lines(value):
        text = json.dumps(value, indent=2, sort_keys=True, default=str) if value else ""
        return text.splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(old), lines(new), "recorded request", "new request", n=2)
    )
