"""The run's step journal as the gateway consults it: every call is identified, looked
up, and (when it went live) inserted before the agent sees its answer.

A step's identity is (request hash, occurrence): the n-th call of the run with exactly
this request. It does not depend on the order in which the agent's threads reach the
gateway, so a resumed or replayed agent that makes 8 tool calls at once is answered
each call's own result whichever thread arrives first. Calls with the same request are
interchangeable by construction: they get the recorded answers in the order they arrive.
`step` is only the arrival order, kept for reading the journal.
"""

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass

from django.db.models import Max

from execution import selectors
from execution.models import JournalStep, Run


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
        recorded = steps.only("step", "request_hash", "occurrence", "result", "is_error", "kind")
        self.recorded = {(s.request_hash, s.occurrence): s for s in recorded}
        # New steps of a resumed run are numbered after the ones it already has.
        self.next = (steps.aggregate(m=Max("step"))["m"] or 0) + 1
        self.seen: Counter[str] = Counter()

    def identify(self, digest: str, *, thread: str, thread_seq: int) -> StepIdentity:
        with self.lock:
            step, self.next = self.next, self.next + 1
            self.seen[digest] += 1
            occurrence = self.seen[digest]
        return StepIdentity(step, digest, occurrence, thread, thread_seq)

    def recorded_step(self, identity: StepIdentity) -> JournalStep | None:
        """The journaled answer to this very call, if the run has one."""
        return self.recorded.get((identity.request_hash, identity.occurrence))
