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
  deadlock), SQLite's writers take the write turn (`rows.write_turn`). A settlement can
  join the caller's transaction (the journal step of its call): one commit for both.
- "redis": one Lua script per operation, atomic on the Redis server. The settlement
  cannot share the journal's commit, so a managed run's hold is also a record of its
  own (held, released or gone once settled), listed per run: a worker that died
  between its journal's commit and the settlement leaves the record held, and
  `reconcile` settles it from the ledger row committed with the journal, or releases
  it when the call never reached the journal (the run makes it again).
"""

import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache, partial

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


@dataclass(frozen=True, slots=True)
class Hold:
    """A managed run's reservation, as the Redis store records it for `reconcile`."""

    tenant_id: int
    run_id: int
    reservation: str  # the ledger's reservation id, in hex


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
    # A settlement joins the caller's transaction: nothing is left for reconcile.
    in_database = True

    def _ensure(self, cursor, windows) -> None:
        values = ", ".join(["(%s, %s, %s, 0, 0)"] * len(windows))
        params = [p for w in windows for p in (w.tenant_id, w.budget_id, w.key)]
        cursor.execute(
            "INSERT INTO billing_budgetwindow (tenant_id, budget_id, key, spent_nusd, "  # noqa: S608
            f"reserved_nusd) VALUES {values} ON CONFLICT DO NOTHING",
            params,
        )

    def reserve(
        self, windows: list[Window], amount: int, *, charge: bool = False, hold: Hold | None = None
    ) -> list[int]:
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

    def settle(
        self,
        windows: list[Window],
        reserved: int,
        actual: int,
        *,
        hold: Hold | None = None,
        joined: bool = False,
    ) -> list[int]:
        """Each window's spent after the settlement, in the order given. `joined`: part
        of the caller's transaction, which commits it (no savepoint), and a database
        error is the caller's to handle, as for its own statements."""
        if not windows:
            return []
        spent = {}
        alone = joined or (reserved and len(windows) == 1)
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
            if joined:
                raise
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

    def reconcile(self, *, tenant_id: int, run_id: int, settled: dict) -> list:
        return []


# KEYS: the N windows' hashes, then for a managed run's hold its record and the run's
# set of records. ARGV: amount, the field it goes to ('reserved', or 'spent' for a
# charge), N, the record's lifetime in seconds, then each window's cap. Returns
# {refused window's index}, or {0, each window's spent after}.
_RESERVE = """
local amount = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
for i = 1, n do
  local spent = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
  if spent + reserved + amount > tonumber(ARGV[i + 4]) then
    return {i}
  end
end
local out = {0}
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], ARGV[2], amount)
  out[i + 1] = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
end
if #KEYS > n then
  local windows = table.concat(KEYS, '\\n', 1, n)
  redis.call('HSET', KEYS[n + 1], 'state', 'held', 'amount', amount, 'windows', windows)
  redis.call('EXPIRE', KEYS[n + 1], ARGV[4])
  redis.call('SADD', KEYS[n + 2], KEYS[n + 1])
  redis.call('EXPIRE', KEYS[n + 2], ARGV[4])
end
return out
"""
# KEYS as for _RESERVE. ARGV: reserved, actual, N, and 'settle' or 'release' (give a
# hold back, the call unsettled). With a record, a hold is settled once: 'held' moves
# both amounts, 'released' (reconcile gave the hold back) adds the spend only, and a
# record gone (settled) changes nothing. Returns each window's spent after.
_SETTLE = """
local reserved, actual, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if #KEYS > n then
  local state = redis.call('HGET', KEYS[n + 1], 'state')
  if state == 'released' then
    reserved = 0
  end
  if state == false or (state == 'released' and ARGV[4] == 'release') then
    reserved, actual = 0, 0
  elseif ARGV[4] == 'release' then
    actual = 0
    redis.call('HSET', KEYS[n + 1], 'state', 'released')
  else
    redis.call('DEL', KEYS[n + 1])
    redis.call('SREM', KEYS[n + 2], KEYS[n + 1])
  end
end
local out = {}
for i = 1, n do
  if reserved ~= 0 then
    redis.call('HINCRBY', KEYS[i], 'reserved', -reserved)
  end
  out[i] = redis.call('HINCRBY', KEYS[i], 'spent', actual)
end
return out
"""
# Long past any call and any resume of its run: only a hold nobody reconciled expires.
HOLD_SECONDS = 7 * 86400


@lru_cache(maxsize=1)
def _redis():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return client, client.register_script(_RESERVE), client.register_script(_SETTLE)


class RedisStore:
    """Windows as Redis hashes {spent, reserved}. Integers only: HINCRBY is exact."""

    in_database = False

    @staticmethod
    def key(w: Window) -> str:
        # One hash slot per tenant ({...}), so a cluster can run a call's script.
        return f"{settings.REDIS_PREFIX}budget:{{{w.tenant_id}}}:{w.budget_id}:{w.key}"

    @staticmethod
    def hold_keys(tenant_id: int, run_id: int, reservation: str) -> list[str]:
        """The hold's record and its run's set of records (the tenant's hash slot)."""
        base = f"{settings.REDIS_PREFIX}budget:{{{tenant_id}}}"
        return [f"{base}:hold:{reservation}", f"{base}:run:{run_id}:holds"]

    def _keys(self, windows: list[Window], hold: Hold | None) -> list[str]:
        keys = [self.key(w) for w in windows]
        if hold is not None:
            keys += self.hold_keys(hold.tenant_id, hold.run_id, hold.reservation)
        return keys

    def _call(self, fn):
        import redis

        try:
            return fn()
        except redis.RedisError as exc:
            raise Unreachable(str(exc)) from exc

    def reserve(
        self, windows: list[Window], amount: int, *, charge: bool = False, hold: Hold | None = None
    ) -> list[int]:
        if not windows:
            return []
        _, reserve, _ = _redis()
        field = "spent" if charge else "reserved"
        out = self._call(
            lambda: reserve(
                keys=self._keys(windows, hold),
                args=[amount, field, len(windows), HOLD_SECONDS, *(w.cap_nusd for w in windows)],
            )
        )
        if int(out[0]):
            w = windows[int(out[0]) - 1]
            raise Refused(f"{w.label} would be passed", w)
        return [int(v) for v in out[1:]]

    def settle(
        self,
        windows: list[Window],
        reserved: int,
        actual: int,
        *,
        hold: Hold | None = None,
        release: bool = False,
    ) -> list[int]:
        if not windows:
            return []
        _, _, settle = _redis()
        how = "release" if release else "settle"
        out = self._call(
            lambda: settle(
                keys=self._keys(windows, hold), args=[reserved, actual, len(windows), how]
            )
        )
        return [int(v) for v in out]

    def reconcile(self, *, tenant_id: int, run_id: int, settled: dict) -> list:
        """The run's holds still recorded as held: a worker died with them. `settled`
        maps a reservation id (hex) to the actual cost of its ledger's settlement,
        committed with the call's journal step; a hold found there is settled, any other
        given back (its call never reached the journal: the run makes it again).
        Returns [(reservation, amount released)] for the holds given back."""
        client, _, settle = _redis()
        _, holds = self.hold_keys(tenant_id, run_id, "")
        released = []
        for record in self._call(partial(client.smembers, holds)):
            record = record.decode()
            got = self._call(partial(client.hmget, record, "state", "amount", "windows"))
            state, amount, windows = (v.decode() if v is not None else None for v in got)
            if state != "held":
                if state is None:  # settled, or expired
                    self._call(partial(client.srem, holds, record))
                continue
            reservation = record.rsplit(":", 1)[1]
            release = reservation not in settled
            keys = windows.split("\n")
            how = "release" if release else "settle"
            args = [int(amount), settled.get(reservation, 0), len(keys), how]
            self._call(partial(settle, keys=[*keys, record, holds], args=args))
            if release:
                released.append((reservation, int(amount)))
        return released

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
