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

from django.db.models import Max

from execution import selectors
from execution.models import Run
from replay.models import JournalStep


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
    row: JournalStep | None = None
    value: object = None
    report: dict | None = None


LIVE = SourceAnswer("live")


class SourceJournal:
    """The journal of the run a replay or fork was made from, read once at its start."""

    def __init__(self, *, link):
        self.link = link
        # The requests are read only for a divergence report: opened then, not for every row.
        rows = list(
            selectors.run_steps_of(run_id=link.source_id).filter(done=True).defer("request")
        )
        self.fork_step = link.fork_step if link.kind == "fork" else None
        self.by_identity = {(s.request_hash, s.occurrence): s for s in rows}
        self.by_thread = {(s.thread, s.thread_seq): s for s in rows}
        self.by_step = {s.step: s for s in rows}
        # The LLM calls' requests, small (their conversation is named, not copied): an
        # answered call journals its source's request and refers to its chat span.
        self.llm_requests = dict(
            selectors.run_steps_of(run_id=link.source_id)
            .filter(done=True, kind="llm.messages")
            .values_list("step", "request")
        )
        fork_row = self.by_step.get(self.fork_step) if self.fork_step else None
        self.fork_identity = (fork_row.request_hash, fork_row.occurrence) if fork_row else None

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
