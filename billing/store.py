"""Where budget windows keep their spend: the one place a cap is enforced.

Each window holds `spent` (settled) and `reserved` (held for calls in flight), in
nano-dollars. Three operations, each atomic over all the windows of one call:
- reserve(amount): add to `reserved` of every window, or of none when any would pass
  its cap (spent + reserved + amount > cap); the refused window is named. With
  charge=True the amount goes to `spent` instead (a call whose cost is known before it
  is made: nothing is left to settle), and each window's spent after is returned;
- settle(reserved, actual): move a reservation to `spent` (the rest is released);
- state(): each window's (spent, reserved).

Whatever number of calls race, a cap can only be passed by calls that reserved less
than they spent, so the settled total stays within the cap plus what was in flight.

Two backends, chosen by BILLING_BUDGET_STORE:
- "database": a conditional UPDATE per window in one transaction; PostgreSQL locks each
  window row until commit (windows are taken in key order, so two calls cannot
  deadlock), SQLite's writers take the write turn (`rows.write_turn`).
- "redis": one Lua script per operation, atomic on the Redis server.
"""

import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from controlplane.tenantcache import TenantCache
from tracing.ingest import rows

_turn = threading.local()
# Windows whose row this process has seen stored: their reservations need no INSERT
# first. A row deleted since (its budget was) is found missing and inserted again.
_stored = TenantCache("budget windows", size=20_000)


@contextmanager
def write_turn():
    """SQLite's write turn (`rows.write_turn`), taken once per thread: costing holds it
    around its whole transaction and settles inside. Take it before any transaction:
    waiting for it while holding SQLite's write lock would deadlock with ingest, which
    takes the turn and then the lock."""
    if getattr(_turn, "held", False):
        yield
        return
    with rows.write_turn():
        _turn.held = True
        try:
            yield
        finally:
            _turn.held = False


@dataclass(frozen=True, slots=True)
class Window:
    tenant_id: int
    budget_id: int
    key: str  # the period: "2026-12-01", "2026-12", "lifetime", "run:42"
    cap_nusd: int
    thresholds: tuple  # fractions of the cap, as given ("0.5", "0.8", "1.0")
    label: str  # how an error names the budget

    @property
    def sort_key(self):
        return (self.budget_id, self.key)


class Refused(Exception):
    """The reservation would pass a cap (window says which), or the store is down."""

    def __init__(self, message: str, window: Window | None = None):
        super().__init__(message)
        self.window = window


class Unreachable(Exception):
    """The budget store could not be asked."""


class _Missing(Exception):
    """A window's row was taken to be stored and the UPDATE found none."""


class DatabaseStore:
    def _ensure(self, cursor, windows) -> None:
        values = ", ".join(["(%s, %s, %s, 0, 0)"] * len(windows))
        params = [p for w in windows for p in (w.tenant_id, w.budget_id, w.key)]
        cursor.execute(
            "INSERT INTO billing_budgetwindow (tenant_id, budget_id, key, spent_nusd, "  # noqa: S608
            f"reserved_nusd) VALUES {values} ON CONFLICT DO NOTHING",
            params,
        )

    def reserve(self, windows: list[Window], amount: int, *, charge: bool = False) -> list[int]:
        """Each window's spent after, in the order given."""
        if not windows:
            return []
        stored = all(_stored.get(w.tenant_id, w.sort_key) for w in windows)
        try:
            try:
                return self._reserve(windows, amount, charge=charge, ensure=not stored)
            except _Missing:
                return self._reserve(windows, amount, charge=charge, ensure=True)
        except DatabaseError as exc:
            raise Unreachable(str(exc)) from exc

    def _reserve(self, windows: list[Window], amount: int, *, charge: bool, ensure: bool):
        # One UPDATE is atomic by itself; more statements go in one transaction, so a
        # call holds all its windows or none.
        alone = not ensure and len(windows) == 1
        held = "spent_nusd" if charge else "reserved_nusd"
        spent = {}
        with (
            write_turn(),
            nullcontext() if alone else transaction.atomic(),
            connection.cursor() as cursor,
        ):
            if ensure:
                self._ensure(cursor, windows)
            for w in sorted(windows, key=lambda w: w.sort_key):
                cursor.execute(
                    f"UPDATE billing_budgetwindow SET {held} = {held} + %s "  # noqa: S608
                    "WHERE budget_id = %s AND key = %s "
                    "AND spent_nusd + reserved_nusd + %s <= %s RETURNING spent_nusd",
                    [amount, w.budget_id, w.key, amount, w.cap_nusd],
                )
                row = cursor.fetchone()
                if row is None:
                    # Leaving the block rolls back what the earlier windows took.
                    if not ensure:
                        raise _Missing  # or refused: asked again with the rows ensured
                    raise Refused(f"{w.label} would be passed", w)
                spent[w.sort_key] = row[0]
        if ensure:
            for w in windows:
                _stored.put(w.tenant_id, {w.sort_key: True})
        return [spent[w.sort_key] for w in windows]

    def settle(self, windows: list[Window], reserved: int, actual: int) -> list[int]:
        """Each window's spent after the settlement, in the order given."""
        if not windows:
            return []
        spent = {}
        alone = reserved and len(windows) == 1
        try:
            with (
                write_turn(),
                nullcontext() if alone else transaction.atomic(),
                connection.cursor() as cursor,
            ):
                if not reserved:
                    self._ensure(cursor, windows)
                for w in sorted(windows, key=lambda w: w.sort_key):
                    cursor.execute(
                        "UPDATE billing_budgetwindow SET spent_nusd = spent_nusd + %s, "
                        "reserved_nusd = reserved_nusd - %s WHERE budget_id = %s AND key = %s "
                        "RETURNING spent_nusd",
                        [actual, reserved, w.budget_id, w.key],
                    )
                    row = cursor.fetchone()
                    spent[w.sort_key] = row[0] if row else 0
        except DatabaseError as exc:
            raise Unreachable(str(exc)) from exc
        return [spent[w.sort_key] for w in windows]

    def state(self, windows: list[Window]) -> list[tuple[int, int]]:
        from billing.models import BudgetWindow

        if not windows:
            return []
        found = {
            (b, k): (s, r)
            for b, k, s, r in BudgetWindow.objects.unscoped()
            .filter(budget_id__in={w.budget_id for w in windows}, key__in={w.key for w in windows})
            .values_list("budget_id", "key", "spent_nusd", "reserved_nusd")
        }
        return [found.get(w.sort_key, (0, 0)) for w in windows]


# KEYS: the windows' hashes. ARGV: amount, the field it goes to ('reserved', or
# 'spent' for a charge), then each window's cap. Returns {refused window's index}, or
# {0, each window's spent after}.
_RESERVE = """
local amount = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  if spent + reserved + amount > tonumber(ARGV[i + 2]) then
    return {i}
  end
end
local out = {0}
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, ARGV[2], amount)
  out[i + 1] = tonumber(redis.call('HGET', key, 'spent') or '0')
end
return out
"""
# ARGV: reserved, actual. Returns each window's spent after.
_SETTLE = """
local out = {}
for i, key in ipairs(KEYS) do
  if tonumber(ARGV[1]) ~= 0 then
    redis.call('HINCRBY', key, 'reserved', -tonumber(ARGV[1]))
  end
  out[i] = redis.call('HINCRBY', key, 'spent', tonumber(ARGV[2]))
end
return out
"""


@lru_cache(maxsize=1)
def _redis():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return client, client.register_script(_RESERVE), client.register_script(_SETTLE)


class RedisStore:
    """Windows as Redis hashes {spent, reserved}. Integers only: HINCRBY is exact."""

    @staticmethod
    def key(w: Window) -> str:
        # One hash slot per tenant ({...}), so a cluster can run a call's script.
        return f"{settings.REDIS_PREFIX}budget:{{{w.tenant_id}}}:{w.budget_id}:{w.key}"

    def _call(self, fn):
        import redis

        try:
            return fn()
        except redis.RedisError as exc:
            raise Unreachable(str(exc)) from exc

    def reserve(self, windows: list[Window], amount: int, *, charge: bool = False) -> list[int]:
        if not windows:
            return []
        _, reserve, _ = _redis()
        field = "spent" if charge else "reserved"
        out = self._call(
            lambda: reserve(
                keys=[self.key(w) for w in windows],
                args=[amount, field, *(w.cap_nusd for w in windows)],
            )
        )
        if int(out[0]):
            w = windows[int(out[0]) - 1]
            raise Refused(f"{w.label} would be passed", w)
        return [int(v) for v in out[1:]]

    def settle(self, windows: list[Window], reserved: int, actual: int) -> list[int]:
        if not windows:
            return []
        _, _, settle = _redis()
        out = self._call(
            lambda: settle(keys=[self.key(w) for w in windows], args=[reserved, actual])
        )
        return [int(v) for v in out]

    def state(self, windows: list[Window]) -> list[tuple[int, int]]:
        if not windows:
            return []
        client, _, _ = _redis()
        pipe = client.pipeline(transaction=False)
        for w in windows:
            pipe.hmget(self.key(w), "spent", "reserved")
        rows = self._call(pipe.execute)
        return [(int(s or 0), int(r or 0)) for s, r in rows]


def get_store():
    kind = settings.BILLING_BUDGET_STORE
    return RedisStore() if kind == "redis" else DatabaseStore()
