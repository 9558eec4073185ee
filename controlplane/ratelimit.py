"""Token buckets: atomic in Redis when REDIS_URL is set, in process otherwise.

`take(key, amount, rate, burst)` removes `amount` tokens from the bucket `key`, which
refills at `rate` tokens a second up to `burst`. It answers how long to wait when the
bucket holds too few (nothing is taken then).
"""

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

# KEYS[1] bucket; ARGV: amount, rate, burst, now (seconds, float). Returns
# {allowed 0/1, wait in milliseconds}. Runs atomically inside Redis.
_LUA = """
local amount, rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, 0
if tokens >= amount then
  tokens = tokens - amount
  allowed = 1
else
  wait = math.ceil((amount - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds; 0 when allowed


class MemoryBuckets:
    def __init__(self):
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, amount: float, rate: float, burst: float) -> Decision:
        now = time.monotonic()
        with self.lock:
            tokens, at = self.buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= amount:
                self.buckets[key] = (tokens - amount, now)
                return Decision(True, 0.0)
            self.buckets[key] = (tokens, now)
            return Decision(False, (amount - tokens) / rate)


class RedisBuckets:
    def __init__(self, url: str, prefix: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.script = self.client.register_script(_LUA)
        self.prefix = prefix

    def take(self, key: str, amount: float, rate: float, burst: float) -> Decision:
        allowed, wait_ms = self.script(
            keys=[f"{self.prefix}bucket:{key}"], args=[amount, rate, burst, time.time()]
        )
        return Decision(bool(allowed), int(wait_ms) / 1000)


@lru_cache(maxsize=1)
def buckets():
    if settings.REDIS_URL:
        return RedisBuckets(settings.REDIS_URL, settings.REDIS_PREFIX)
    return MemoryBuckets()


def take(key: str, amount: float, *, rate: float, burst: float | None = None) -> Decision:
    if rate <= 0:
        return Decision(True, 0.0)
    burst = burst if burst is not None else rate
    if amount > burst:
        # More than a full bucket can never pass; let it through once the bucket is
        # full rather than refuse it forever.
        amount = burst
    return buckets().take(key, amount, rate, burst)
