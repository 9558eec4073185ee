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

from django.db import connection
from django.utils import timezone

from execution.models import JournalStep, Run

log = logging.getLogger(__name__)
_COLUMNS = (
    "tenant_id",
    "run_id",
    "step",
    "kind",
    "request_hash",
    "request",
    "result",
    "is_error",
    "duration_ms",
    "created_at",
)
_FIELDS = {name: JournalStep._meta.get_field(name.removesuffix("_id")) for name in _COLUMNS}
# The table and columns are constants; the values go as parameters.
_INSERT = (
    f"INSERT INTO {JournalStep._meta.db_table} ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
)


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
    ) -> None:
        """Insert the step; committed when this returns (autocommit: one statement).

        Plain SQL through the fields' own adapters: this is on every call's path, and
        the ORM's save() costs more than the insert itself. The run's counters are
        written by the supervisor once a second, not here.
        """
        values = {
            "tenant_id": self.tenant_id,
            "run_id": self.run_id,
            "step": step,
            "kind": kind,
            "request_hash": digest,
            "request": json_safe(request),
            "result": json_safe(result),
            "is_error": is_error,
            "duration_ms": duration_ms,
            "created_at": timezone.now(),
        }
        params = [
            _FIELDS[name].get_db_prep_save(value, connection) for name, value in values.items()
        ]
        with connection.cursor() as cursor:
            cursor.execute(_INSERT, params)
