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

from django.db import transaction
from django.db.models import F

from execution.models import JournalStep, Run

log = logging.getLogger(__name__)


def json_safe(value):
    """`value` with NUL characters replaced: PostgreSQL's jsonb cannot hold them, and an
    agent's output or a tool's answer may contain anything."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    return value


def request_hash(op: str, args: dict) -> str:
    canonical = json.dumps(
        {"op": op, "args": args}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Journal:
    def __init__(self, *, run: Run):
        self.run_id, self.tenant_id = run.pk, run.tenant_id
        self.lock = threading.Lock()
        self.next = 1
        self.recorded = {
            s.step: s
            for s in JournalStep.objects.filter(run_id=run.pk).only(
                "step", "request_hash", "result", "is_error", "kind"
            )
        }

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
        JournalStep.objects.filter(run_id=self.run_id, step__gte=step).delete()
        return None

    def append(
        self,
        *,
        step: int,
        kind: str,
        digest: str,
        request,
        result,
        is_error: bool,
        duration_ms: float,
        tool_call: bool = False,
        tokens: tuple[int, int] = (0, 0),
    ) -> None:
        # One transaction: the step and the run's counters land together, and both are
        # committed before the gateway answers the agent.
        with transaction.atomic():
            JournalStep.objects.create(
                tenant_id=self.tenant_id,
                run_id=self.run_id,
                step=step,
                kind=kind,
                request_hash=digest,
                request=json_safe(request),
                result=json_safe(result),
                is_error=is_error,
                duration_ms=duration_ms,
            )
            Run.objects.filter(pk=self.run_id).update(
                step_count=F("step_count") + 1,
                tool_call_count=F("tool_call_count") + (1 if tool_call else 0),
                input_tokens=F("input_tokens") + tokens[0],
                output_tokens=F("output_tokens") + tokens[1],
            )
