"""The run's step journal: every gateway call, committed before the agent sees it.

A run taken up again after its worker died starts a new sandbox from the top; the
gateway then serves each step the journal already holds (same step number, same
request hash) from the journal instead of calling the LLM or tool again, and goes live
at the journal's end. A step whose request differs from the recorded one means the
agent took another path: the rest of the journal is dropped and the run goes live.
"""

import hashlib
import json
import logging
import threading

from execution import selectors, services
from execution.models import JournalStep, Run

log = logging.getLogger(__name__)


def request_hash(op: str, args: dict) -> str:
    canonical = json.dumps(
        {"op": op, "args": args}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Journal:
    def __init__(self, *, run: Run):
        self.run_id = run.pk
        self.lock = threading.Lock()
        self.next = 1
        recorded = selectors.run_steps(run=run).only(
            "step", "request_hash", "result", "is_error", "kind"
        )
        self.recorded = {s.step: s for s in recorded}

    def take_step(self) -> int:
        with self.lock:
            step, self.next = self.next, self.next + 1
            return step

    def replay(self, step: int, digest: str) -> JournalStep | None:
        with self.lock:
            found = self.recorded.get(step)
            if found is None:
                return None
            if found.request_hash == digest:
                return found
            log.warning("run %s diverged from its journal at step %s", self.run_id, step)
            later = [s for s in self.recorded if s >= step]
            for s in later:
                del self.recorded[s]
        services.journal_steps_drop(run_id=self.run_id, from_step=step)
        return None
