"""Per-agent and per-tool rate limits of managed runs, on controlplane's token buckets.

`acquire(key, per_minute)` takes one token and returns 0, or the seconds until one is
free (taking nothing). Burst is a tenth of a minute's rate, at least one. The buckets
are shared by every worker process (Redis, or the database on the embedded default).
"""

from controlplane import ratelimit


def burst_for(per_minute: float) -> float:
    return max(1.0, per_minute / 10)


def acquire(key: str, per_minute: float) -> float:
    decision = ratelimit.take(key, 1, rate=per_minute / 60.0, burst=burst_for(per_minute))
    return decision.retry_after
