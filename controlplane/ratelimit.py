"""Token buckets, the one implementation every limit uses.

`take(key, amount, rate=, burst=)` removes `amount` tokens from bucket `key`, which
refills at `rate` tokens a second up to `burst`; when too few are there it takes
nothing and says how long to wait. `need=` asks for more tokens to be there than are
taken: `take(key, 0, need=1)` looks without taking (throttle.py checks a bucket of
failures before an attempt and takes from it only when the attempt fails). Where the bucket lives:
- Redis, when REDIS_URL is set: one Lua script, atomic, on Redis's own clock so every
  process agrees on "now";
- otherwise the database (`shared=True`: every process of the embedded default sees
  the same bucket, at the price of a write), or process memory (`shared=False`: for
  hot paths such as ingest, where a per-process limit is close enough).
"""

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.db import transaction

_LUA = """
local amount, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= need then
  tokens = tokens - amount
else
  wait = math.ceil((need - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds; 0 when allowed


def _refill(tokens: float, elapsed: float, amount: float, rate: float, burst: float, need: float):
    tokens = min(burst, tokens + max(0.0, elapsed) * rate)
    if tokens >= need:
        return tokens - amount, 0.0
    return tokens, (need - tokens) / rate


class MemoryBuckets:
    def __init__(self):
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, amount: float, rate: float, burst: float, need: float) -> float:
        now = time.monotonic()
        with self.lock:
            tokens, at = self.buckets.get(key, (burst, now))
            tokens, wait = _refill(tokens, now - at, amount, rate, burst, need)
            self.buckets[key] = (tokens, now)
        return wait


def _database_take(key: str, amount: float, rate: float, burst: float, need: float) -> float:
    from controlplane.models import RateBucket

    now = time.time()
    with transaction.atomic():
        # select_for_update on PostgreSQL; SQLite's IMMEDIATE transactions serialise.
        RateBucket.objects.get_or_create(key=key, defaults={"tokens": burst, "updated": now})
        bucket = RateBucket.objects.select_for_update().get(key=key)
        tokens, wait = _refill(bucket.tokens, now - bucket.updated, amount, rate, burst, need)
        RateBucket.objects.filter(pk=bucket.pk).update(tokens=tokens, updated=now)
    return wait


@lru_cache(maxsize=1)
def _redis_script():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return client.register_script(_LUA)


_memory = MemoryBuckets()


def take(
    key: str,
    amount: float = 1,
    *,
    rate: float,
    burst: float | None = None,
    shared: bool = True,
    need: float | None = None,
) -> Decision:
    if rate <= 0:
        return Decision(True, 0.0)
    burst = burst if burst is not None else rate
    # More than a full bucket could never pass: let it through once the bucket is full.
    amount = min(amount, burst)
    need = min(amount if need is None else need, burst)
    if settings.REDIS_URL:
        wait_ms = _redis_script()(
            keys=[f"{settings.REDIS_PREFIX}rl:{key}"], args=[amount, rate, burst, need]
        )
        wait = int(wait_ms) / 1000
    elif shared:
        wait = _database_take(key, amount, rate, burst, need)
    else:
        wait = _memory.take(key, amount, rate, burst, need)
    return Decision(wait == 0, wait)
