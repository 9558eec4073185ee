"""How a run and its journal read on the runs pages: durations, limits used against their
caps, and one-line summaries of each step's request and result."""

import json
from dataclasses import dataclass

from django.utils import timezone

from execution.models import FINISHED_STATUSES
from frontend import present

SUMMARY_CHARS = 120


def is_active(run) -> bool:
    """Still queued or running: its page and row keep polling."""
    return run.status not in FINISHED_STATUSES


def run_duration_ms(run) -> float | None:
    """From start to finish; while it runs, the time so far. None before it starts."""
    if run.started_at is None:
        return None
    end = run.finished_at or timezone.now()
    return max((end - run.started_at).total_seconds() * 1000, 0.0)


@dataclass(slots=True)
class Usage:
    label: str
    used: float
    cap: float
    unit: str = ""

    @property
    def high(self) -> float:
        """Where the bar turns to a warning: 80% of the cap."""
        return self.cap * 0.8

    @property
    def percent(self) -> int:
        return min(round(100 * self.used / self.cap), 100) if self.cap else 0

    @property
    def figures(self) -> str:
        """Used against the cap as a person reads it: 9 / 12, 302 / 200k, 1.6s / 60s."""
        return f"{_figure(self.used)}{self.unit} / {_figure(self.cap)}{self.unit}"


def _figure(value: float) -> str:
    return present.count(value) if float(value).is_integer() else f"{value:g}"


def run_usage(run) -> list[Usage]:
    """Each limit the gateway or the supervisor enforces, against what the run used."""
    limits = run.limits or {}
    elapsed = (run_duration_ms(run) or 0) / 1000
    candidates = [
        ("Steps", run.step_count, "max_steps", ""),
        ("Tool calls", run.tool_call_count, "max_tool_calls", ""),
        ("Tokens", run.input_tokens + run.output_tokens, "budget_tokens", ""),
        ("Wall time", round(elapsed, 1), "wall_seconds", "s"),
    ]
    return [
        Usage(label, used, limits[key], unit)
        for label, used, key, unit in candidates
        if isinstance(limits.get(key), int | float) and limits[key] > 0
    ]


def _clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def request_summary(kind: str, request) -> str:
    request = request if isinstance(request, dict) else {}
    if kind == "llm.messages":
        parts = [str(request.get("model") or "the agent's model")]
        if request.get("max_tokens"):
            parts.append(f"max {request['max_tokens']} tokens")
        return _clip(", ".join(parts))
    if kind == "tool":
        return _clip(f"{request.get('name')}({_compact(request.get('arguments', {}))})")
    return _clip(_compact(request))


def result_summary(kind: str, result, *, is_error: bool) -> str:
    if is_error:
        return ""  # the error column says it
    if kind == "llm.messages" and isinstance(result, dict):
        blocks = [b for b in result.get("content") or [] if isinstance(b, dict)]
        texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
        calls = [f"→ {b.get('name')}" for b in blocks if b.get("type") == "tool_use"]
        usage = result.get("usage") or {}
        tokens = f"[{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out]"
        return _clip(" ".join([*texts, *calls, tokens]))
    if kind == "tool" and isinstance(result, dict) and "output" in result:
        return _clip(_compact(result["output"]))
    return _clip(_compact(result))


def error_summary(result, *, is_error: bool) -> str:
    if not is_error:
        return ""
    if isinstance(result, dict) and "message" in result:
        kind = result.get("type")
        return _clip(f"{kind}: {result['message']}" if kind else result["message"])
    return _clip(_compact(result))


@dataclass(slots=True)
class StepRow:
    step: int
    kind: str
    request: str
    result: str
    error: str
    duration_ms: float


def step_rows(steps) -> list[StepRow]:
    return [
        StepRow(
            step=s.step,
            kind=s.kind,
            request=request_summary(s.kind, s.request),
            result=result_summary(s.kind, s.result, is_error=s.is_error),
            error=error_summary(s.result, is_error=s.is_error),
            duration_ms=s.duration_ms,
        )
        for s in steps
    ]
