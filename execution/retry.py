"""Retries with exponential backoff and full jitter, for the LLM and for tools.

Retried: timeouts, connection errors, 5xx and 429. A `Retry-After` from the upstream
is honoured (capped), since retrying sooner only earns another 429.
"""

import random
import time
from dataclasses import dataclass

from django.conf import settings


class UpstreamError(Exception):
    """A failed call to an upstream (LLM or tool). `retryable` decides the retry."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        kind: str = "error",
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.kind = kind
        if retryable is None:
            retryable = status is None or status == 429 or status >= 500
        self.retryable = retryable


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    base_seconds: float
    cap_seconds: float

    @classmethod
    def default(cls) -> "RetryPolicy":
        return cls(
            attempts=settings.EXECUTION_RETRY_ATTEMPTS,
            base_seconds=settings.EXECUTION_RETRY_BASE_MS / 1000,
            cap_seconds=settings.EXECUTION_RETRY_CAP_MS / 1000,
        )

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))
        if retry_after is not None:
            return min(max(retry_after, backoff), self.cap_seconds)
        return backoff


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from APIs; fall back to our own backoff


def with_retries(call, *, policy: RetryPolicy | None = None, sleep=time.sleep):
    """call() until it succeeds or fails for good; returns (result, attempts)."""
    policy = policy or RetryPolicy.default()
    for attempt in range(policy.attempts):
        try:
            return call(), attempt + 1
        except UpstreamError as exc:
            if not exc.retryable or attempt + 1 >= policy.attempts:
                exc.attempts = attempt + 1
                raise
            sleep(policy.delay(attempt, exc.retry_after))
    raise AssertionError("unreachable")
