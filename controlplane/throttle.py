"""Throttling of failed sign-ins and unknown API keys.

Each failure takes a token from two buckets: the client address's and the account's
(a username, or an API key's displayed prefix). Before an attempt is checked at all,
both buckets must hold a token, so once either is empty even the right password or
key is refused until it refills: guessing gets `burst` tries, then one per
`AUTH_FAILURE_REFILL_SECONDS`. Successes take nothing, so a busy client with a good key
is never slowed; a key the process accepted within API_KEY_CACHE_SECONDS is not checked
at all (it was not guessed), so ingest's requests cost no throttle round trips. The
buckets are controlplane.ratelimit's: in Redis when configured, otherwise in the
database, so every process of the embedded default sees them.
"""

import math
from dataclasses import dataclass

from django.conf import settings

from controlplane import ratelimit

PREFIX = "throttle:"


class Throttled(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"too many failed attempts; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    """Who is trying: the client's address and the account the attempt names."""

    kind: str  # "login" or "api-key"
    address: str
    account: str

    def _buckets(self):
        rate = 1 / settings.AUTH_FAILURE_REFILL_SECONDS
        yield f"{PREFIX}{self.kind}:addr:{self.address}", rate, settings.AUTH_FAILURES_PER_ADDRESS
        if self.account:
            account = self.account.lower()[:150]
            yield f"{PREFIX}{self.kind}:account:{account}", rate, settings.AUTH_FAILURES_PER_ACCOUNT

    def check(self) -> None:
        """Raises Throttled while either bucket is empty."""
        waits = [
            ratelimit.take(key, 0, rate=rate, burst=burst, need=1).retry_after
            for key, rate, burst in self._buckets()
        ]
        if max(waits) > 0:
            raise Throttled(max(1, math.ceil(max(waits))))

    def failed(self) -> None:
        for key, rate, burst in self._buckets():
            ratelimit.take(key, 1, rate=rate, burst=burst)


def client_address(meta) -> str:
    """The peer's address. Behind a proxy every client shares the proxy's, so
    AUTH_FAILURES_PER_ADDRESS should then be raised or the proxy made to throttle."""
    return meta.get("REMOTE_ADDR") or "unknown"


def api_key_attempt(address: str, raw_key: str) -> Attempt:
    # The account is the key's first 10 characters, the prefix ApiKey.prefix shows.
    return Attempt("api-key", address, raw_key[:10])
