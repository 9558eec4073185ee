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
  join the caller's transaction (the journal step of its call): one commit for both. A
  managed run's hold is a BudgetHold row from its reservation to its settlement, for
  `reconcile`, as below.
- "redis": one Lua script per operation, atomic on the Redis server. The settlement
  cannot share the journal's commit, so a managed run's hold is also a record of its
  own (held, released or gone once settled), listed per run: a worker that died
  between its journal's commit and the settlement leaves the record held, and
  `reconcile` settles it from the ledger row committed with the journal, or releases
  it when the call never reached the journal (the run makes it again).
"""

import json
import threading
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache, partial

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

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
    """A managed run's reservation, as the store records it for `reconcile`."""

    tenant_id: int
    run_id: int
    reservation: str  # the ledger's reservation id, in hex
    kind: str = "llm"  # what was reserved, for the ledger's row when it is given back


class Refused(Exception):
    """The reservation would pass a cap (window says which), or the store is down."""

    def __init__(self, message: str, window: Window | None = None):
        super().__init__(message)
        self.window = window


class Unreachable(Exception):
    """The budget store could not be asked."""


class _Missing(Exception):
    """A window's row was taken to be stored and the UPDATE found none."""


# A window's conditional UPDATE (reserve): `{held}` is reserved_nusd, or spent_nusd for
# a charge.
_RESERVE_SQL = (
    "UPDATE billing_budgetwindow SET {held} = {held} + %s "
    "WHERE budget_id = %s AND key = %s "
    "AND spent_nusd + reserved_nusd + %s <= %s RETURNING spent_nusd"
)
_SETTLE_SQL = (
    "UPDATE billing_budgetwindow SET spent_nusd = spent_nusd + %s, "
    "reserved_nusd = reserved_nusd - {reserved} WHERE budget_id = %s AND key = %s{also} "
    "RETURNING spent_nusd"
)
_HOLD_INSERT = (
    "INSERT INTO billing_budgethold (reservation, tenant_id, run_id, kind, amount_nusd, "
    "windows, at, released) {rows}"
)
_HOLD_DELETE = (
    "DELETE FROM billing_budgethold WHERE reservation = %s RETURNING amount_nusd, released"
)
# A reservation's commit on PostgreSQL does not wait for its WAL to reach the disk
# (the flush was most of a call's time in the hook). It is seen by every other session
# once committed, under the same row locks, so the cap holds as before; only a crash of
# the server could lose it, and then it loses everything committed after it too, the
# call's journal step included: that commit is synchronous and flushes the WAL up to
# it, and the agent's answer waits for it, so no answered call's reservation is lost,
# and a run resumed after the crash reserves its unjournaled call again. Sent in the
# reservation's own statement when the driver binds parameters client-side (psycopg's
# ClientCursor, Django's default: several statements in one query are one
# transaction); else in a transaction of its own.
_NO_FLUSH_WAIT = "; SET LOCAL synchronous_commit TO OFF"
# On PostgreSQL a call of one window reserves and records its hold in one statement
# (the hold's row inserted only when the UPDATE took the amount), and settles and
# deletes it in one: a settlement releases the hold's amount while it is held, nothing
# once `reconcile` gave it back, and changes nothing when the hold is gone (settled).
_RESERVE_HOLDING = (
    f"WITH w AS ({_RESERVE_SQL.format(held='reserved_nusd')}), h AS ("  # noqa: S608
    + _HOLD_INSERT.format(
        rows="SELECT %s::uuid, %s::bigint, %s::bigint, %s::varchar, %s::bigint, %s::jsonb, "
        "%s::timestamptz, false WHERE EXISTS (SELECT 1 FROM w)"
    )
    + ") SELECT spent_nusd FROM w"
)
_SETTLE_HELD = f"WITH h AS ({_HOLD_DELETE}) " + _SETTLE_SQL.format(  # noqa: S608
    reserved="(SELECT CASE WHEN released THEN 0 ELSE amount_nusd END FROM h)",
    also=" AND EXISTS (SELECT 1 FROM h)",
)


class DatabaseStore:
    """A managed run's hold is a BudgetHold row, written by the reservation's statement
    (PostgreSQL: one statement with the window's UPDATE) or transaction, and deleted by
    its settlement's; a lost worker's are settled or given back by `reconcile`."""

    # A settlement can join the caller's transaction (its journal step's).
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
                return self._reserve(windows, amount, charge=charge, hold=hold, ensure=not stored)
            except _Missing:
                return self._reserve(windows, amount, charge=charge, hold=hold, ensure=True)
        except DatabaseError as exc:
            raise Unreachable(str(exc)) from exc

    def _reserve(self, windows: list[Window], amount: int, *, charge, hold, ensure: bool):
        # One statement is atomic by itself; more go in one transaction, so a call holds
        # all its windows or none, and its hold is recorded with them. On PostgreSQL a
        # call of one window records its hold in the UPDATE's own statement, and the
        # commit does not wait for its WAL flush (_NO_FLUSH_WAIT says why).
        postgres = connection.vendor == "postgresql"
        folded = hold is not None and postgres
        lazy = postgres and not connection.in_atomic_block  # not the caller's commit
        tail = _NO_FLUSH_WAIT if lazy and _client_binding() else ""
        alone = not ensure and len(windows) == 1 and (hold is None or folded) and (tail or not lazy)
        held = "spent_nusd" if charge else "reserved_nusd"
        update = _RESERVE_SQL.format(held=held) + (tail if alone else "")
        spent = {}
        with (
            write_turn(),
            nullcontext() if alone else transaction.atomic(),
            connection.cursor() as cursor,
        ):
            if lazy and not alone:
                cursor.execute(_NO_FLUSH_WAIT.lstrip("; "))
            if ensure:
                self._ensure(cursor, windows)
            if alone and folded:
                w = windows[0]
                cursor.execute(
                    _RESERVE_HOLDING + tail,
                    [amount, w.budget_id, w.key, amount, w.cap_nusd,
                     *_hold_params(hold, amount, windows)],
                )  # fmt: skip
                rows = {w.sort_key: cursor.fetchone()}
            else:
                rows = {}
                for w in sorted(windows, key=lambda w: w.sort_key):
                    cursor.execute(update, [amount, w.budget_id, w.key, amount, w.cap_nusd])
                    rows[w.sort_key] = row = cursor.fetchone()
                    if row is None:
                        break
            for w in sorted(windows, key=lambda w: w.sort_key):
                row = rows.get(w.sort_key)
                if row is None:
                    # Leaving the block rolls back what the earlier windows took.
                    if not ensure:
                        raise _Missing  # or refused: asked again with the rows ensured
                    raise Refused(f"{w.label} would be passed", w)
                spent[w.sort_key] = row[0]
            if hold is not None and not (alone and folded):
                cursor.execute(
                    _HOLD_INSERT.format(rows="VALUES (%s, %s, %s, %s, %s, %s, %s, false)"),
                    _hold_params(hold, amount, windows),
                )
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
        error is the caller's to handle, as for its own statements. With a hold, its row
        says what is left to do: all of it while held; the spend only once `reconcile`
        gave the hold back (a lost worker's call that answered after all); nothing when
        the row is gone (settled already)."""
        if not windows:
            return []
        spent = {}
        folded = hold is not None and len(windows) == 1 and connection.vendor == "postgresql"
        alone = joined or (reserved and len(windows) == 1 and (hold is None or folded))
        try:
            with (
                write_turn(),
                nullcontext() if alone else transaction.atomic(),
                connection.cursor() as cursor,
            ):
                if not reserved:
                    self._ensure(cursor, windows)
                if folded:
                    w = windows[0]
                    cursor.execute(_SETTLE_HELD, [hold.reservation, actual, w.budget_id, w.key])
                    row = cursor.fetchone()
                    return [row[0] if row else 0]
                if hold is not None:
                    cursor.execute(_HOLD_DELETE, [hold.reservation])
                    row = cursor.fetchone()
                    if row is None:
                        return [0] * len(windows)
                    reserved = 0 if row[1] else row[0]
                for w in sorted(windows, key=lambda w: w.sort_key):
                    cursor.execute(
                        _SETTLE_SQL.format(reserved="%s", also=""),
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
        """The run's holds still held: a worker died with them (a settlement deletes
        its hold in its own commit). `settled` maps a reservation id (hex) to the actual
        cost of a settlement the ledger has (one whose window UPDATE failed): such a
        hold is settled and deleted; any other is given back and kept as released
        (its call never reached the journal: the run makes it again). One transaction,
        and a hold is taken by the statement that changes its row, so each is settled
        or given back once, whoever gets there first. Returns [(reservation, kind,
        amount released)] for the holds given back."""
        moves: dict[tuple, list[int]] = {}  # window -> [spent added, reserved taken]
        released, done = [], []
        try:
            with write_turn(), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE billing_budgethold SET released = true WHERE tenant_id = %s "
                    "AND run_id = %s AND NOT released "
                    "RETURNING reservation, kind, amount_nusd, windows",
                    [tenant_id, run_id],
                )
                for reservation, kind, amount, windows in cursor.fetchall():
                    key = uuid.UUID(str(reservation)).hex
                    actual = settled.get(key)
                    if actual is None:
                        released.append((key, kind, amount))
                    else:
                        done.append(reservation)
                    for budget_id, window in _json(windows):
                        move = moves.setdefault((budget_id, window), [0, 0])
                        move[0] += actual or 0
                        move[1] += amount
                if done:
                    cursor.execute(
                        "DELETE FROM billing_budgethold WHERE reservation IN "  # noqa: S608
                        f"({', '.join(['%s'] * len(done))})",
                        done,
                    )
                for (budget_id, window), (actual, amount) in sorted(moves.items()):
                    cursor.execute(
                        _SETTLE_SQL.format(reserved="%s", also=""),
                        [actual, amount, budget_id, window],
                    )
        except DatabaseError as exc:
            raise Unreachable(str(exc)) from exc
        return released


def _client_binding() -> bool:
    return not connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")


def _hold_params(hold: Hold, amount: int, windows: list[Window]) -> list:
    held_in = rows.json_param([[w.budget_id, w.key] for w in windows])
    at = connection.ops.adapt_datetimefield_value(timezone.now())
    return [hold.reservation, hold.tenant_id, hold.run_id, hold.kind, amount, held_in, at]


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


# KEYS: the N windows' hashes, then for a managed run's hold its record and the run's
# set of records. ARGV: amount, the field it goes to ('reserved', or 'spent' for a
# charge), N, the record's lifetime in seconds, the hold's kind, then each window's cap. Returns
# {refused window's index}, or {0, each window's spent after}.
_RESERVE = """
local amount = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
for i = 1, n do
  local spent = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
  if spent + reserved + amount > tonumber(ARGV[i + 5]) then
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
  redis.call('HSET', KEYS[n + 1], 'state', 'held', 'amount', amount, 'windows', windows,
             'kind', ARGV[5])
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
                args=[
                    amount,
                    field,
                    len(windows),
                    HOLD_SECONDS,
                    hold.kind if hold else "",
                    *(w.cap_nusd for w in windows),
                ],
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
        Returns [(reservation, kind, amount released)] for the holds given back."""
        client, _, settle = _redis()
        _, holds = self.hold_keys(tenant_id, run_id, "")
        released = []
        for record in self._call(partial(client.smembers, holds)):
            record = record.decode()
            got = self._call(partial(client.hmget, record, "state", "amount", "windows", "kind"))
            state, amount, windows, kind = (v.decode() if v is not None else None for v in got)
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
                released.append((reservation, kind or "llm", int(amount)))
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
