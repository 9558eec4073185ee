"""Rate limits: token buckets, atomic in Redis (one Lua script), or in the database on
the embedded default where there is no Redis.

`acquire(key, per_minute)` takes one token and returns 0, or the seconds until one is
free (taking nothing). Burst is a tenth of a minute's rate, at least one.
"""

import time
from functools import lru_cache

from django.conf import settings
from django.db import transaction

from execution.models import RateBucket

# Refill, then take a token if there is one; else the wait in milliseconds. The Redis
# clock (TIME) is used so every worker agrees on "now".
_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


def burst_for(per_minute: float) -> float:
    return max(1.0, per_minute / 10)


@lru_cache(maxsize=1)
def _redis():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    return client, client.register_script(_LUA)


def acquire(key: str, per_minute: float) -> float:
    rate = per_minute / 60.0
    burst = burst_for(per_minute)
    if settings.REDIS_URL:
        _, script = _redis()
        wait_ms = script(keys=[settings.EXECUTION_REDIS_PREFIX + "rl:" + key], args=[rate, burst])
        return int(wait_ms) / 1000
    return _acquire_db(key, rate, burst)


def _acquire_db(key: str, rate: float, burst: float) -> float:
    now = time.time()
    with transaction.atomic():
        # select_for_update on PostgreSQL; SQLite's IMMEDIATE transactions serialise.
        RateBucket.objects.get_or_create(key=key, defaults={"tokens": burst, "updated": now})
        bucket = RateBucket.objects.select_for_update().get(key=key)
        tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rate
        RateBucket.objects.filter(pk=bucket.pk).update(tokens=tokens, updated=now)
    return wait
