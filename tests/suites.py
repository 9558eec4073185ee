"""Requests sent and 5xx answers seen by the generated suites (OTLP fuzzing,
Schemathesis, the cross-tenant matrix), printed at the end of the run."""

from collections import Counter

SENT: Counter = Counter()
SERVER_ERRORS: Counter = Counter()


def seen(suite: str, status: int) -> None:
    SENT[suite] += 1
    if status >= 500:
        SERVER_ERRORS[suite] += 1


def summary() -> list[str]:
    return [
        f"{suite}: {SENT[suite]} requests, {SERVER_ERRORS[suite]} answered 5xx"
        for suite in sorted(SENT)
    ]
