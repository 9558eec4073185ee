"""The gateway's budget hook (EXECUTION_BUDGET_HOOK): reserve the worst case before a
call, settle the actual cost after, release the rest.

    reserve ──▶ windows of the call's budgets (tenant, agent, run) ── store.reserve
       │            refused: BudgetRefused, the run stops with reason `budget`
       │            a tool call: its price charged here (charge=True) ──▶ thresholds
       ▼
    the call (LLM, tool, sandbox CPU time)
       ▼
    settle ──▶ store.settle(reserved, actual) ──▶ thresholds   (a charged tool: nothing)
       ▼
    ledger rows and roll-ups, batched: written together about once a second, past
    FLUSH_ROWS rows, and at flush() (the run's end)

The gateway settles an LLM call with its journal step (settle_journaled): on the
database store the window's UPDATE and the settlement's ledger rows join the step's
transaction, one commit for the three; on Redis the ledger rows do, and the Lua script
runs after that commit. A managed run's hold is recorded by the store until it is
settled, so a worker dying in between leaves a hold that reconcile() settles from the
ledger, or gives back, when the run is taken up again.

An LLM call's worst case is its input tokens (estimated from the request's JSON
length) plus max_tokens of output, at the model's prices; a tool call's is the book's
price per call, which is also its cost, so it is charged at once (and given back only
when the call was not made); the sandbox's is its CPU-second limit at the CPU-second
price.

Only the windows hold the cap, so only they are written on the call's path; the
ledger and the roll-ups follow in batches, each row stamped when its call reserved or
settled (a run's cost stays its settlements, line by line, once flushed). A worker
that dies loses at most its last second of ledger rows; the windows keep the spend.
"""

import json
import logging
import threading
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from billing import budgets
from billing.models import CostKind, LedgerKind
from billing.prices import platform_price, price_for, to_nusd
from billing.store import Hold, Refused, Unreachable, Window, get_store, write_turn
from execution.budget import BudgetRefused
from tracing.ingest import rows

log = logging.getLogger(__name__)
# JSON characters per token, at least: the estimate of a request's input tokens
# errs high (Claude's tokens average 3.5-4 characters of English; JSON escapes add).
CHARS_PER_TOKEN = 3
PROVIDER = "anthropic"  # the gateway's LLM upstream
FLUSH_SECONDS = 1.0  # the oldest ledger row a hook may hold back
FLUSH_ROWS = 500  # ledger rows held back at most
LEDGER_COLUMNS = (
    "tenant_id",
    "run_id",
    "reservation",
    "entry",
    "kind",
    "amount_nusd",
    "detail",
    "at",
)


@dataclass
class Reservation:
    id: uuid.UUID
    tenant_id: int
    run_id: int
    kind: str
    amount_nusd: int
    windows: list[Window] = field(default_factory=list)
    price: object = None
    detail: dict = field(default_factory=dict)
    charged: bool = False  # the amount went to spent at reservation: nothing to settle
    hold: Hold | None = None  # a managed run's hold, as the Redis store records it
    # An LLM call's reserve row, written with its settlement (with its journal step).
    reserved_row: tuple | None = None


def estimate_input_tokens(request: dict) -> int:
    body = [request.get("system"), request.get("messages"), request.get("tools")]
    return len(json.dumps(body, default=str)) // CHARS_PER_TOKEN + 1


def _fail_open(tenant_id: int, *, run_id: int, during: str) -> bool:
    """Whether the tenant lets calls go ahead while the store cannot be reached
    (billing.services audits each run's first one)."""
    from billing.services import budget_store_unreachable

    return budget_store_unreachable(tenant_id=tenant_id, run_id=run_id, during=during)


class BudgetHook:
    """One per run's gateway; its methods are called from the gateway's threads."""

    def __init__(self):
        self.store = get_store()
        self._runs: dict[int, tuple[int, str]] = {}
        # Each run's windows, with the cached budget lists and day they were made from:
        # made again when the budget cache hands out new lists (a budget changed or its
        # entry expired) or the day turns.
        self._windows: dict[int, tuple] = {}
        # What flush() writes: ledger rows, and roll-up sums per (tenant, day, kind,
        # agent, run) as [cost, calls].
        self._lock = threading.Lock()
        self._rows: list[tuple] = []
        self._usage: dict[tuple, list[int]] = {}
        self._held_since = 0.0

    def _run(self, run_id: int) -> tuple[int, str]:
        if run_id not in self._runs:
            from execution.models import Run

            run = Run.objects.unscoped().select_related("agent").get(pk=run_id)
            self._runs[run_id] = (run.tenant_id, run.agent.name)
        return self._runs[run_id]

    # --- admission -----------------------------------------------------------------

    def admit(self, *, run) -> None:
        """At run_create: the run's own cap (`budget_usd`), and a refusal when any budget
        the run answers to is spent already."""
        from billing import services

        cap = (run.limits or {}).get("budget_usd")
        if cap:
            services.run_budget_create(run=run, cap_usd=cap)
        windows = budgets.windows_for(tenant_id=run.tenant_id, agent=run.agent.name, run_id=run.pk)
        try:
            states = self.store.state(windows)
        except Unreachable:
            if _fail_open(run.tenant_id, run_id=run.pk, during="admission"):
                return
            raise BudgetRefused("the budget store cannot be reached") from None
        for w, (spent, _reserved) in zip(windows, states, strict=True):
            if spent >= w.cap_nusd:
                raise BudgetRefused(f"{w.label} is spent")

    def _windows_of(self, run_id: int, tenant_id: int, agent: str) -> list[Window]:
        day = timezone.now().date()
        tenant_wide, own = budgets.cache.budgets(tenant_id, run_id)
        made = self._windows.get(run_id)
        if made is None or made[0] is not tenant_wide or made[1] is not own or made[2] != day:
            windows = budgets.windows_for(tenant_id=tenant_id, agent=agent, run_id=run_id, day=day)
            made = (tenant_wide, own, day, windows)
            self._windows[run_id] = made
        return made[3]

    # --- reserve / settle ----------------------------------------------------------

    def reserve(
        self,
        *,
        run_id: int | None,
        request: dict,
        kind: str = CostKind.LLM,
        tenant_id: int | None = None,
        agent: str = "",
    ) -> Reservation:
        """A call of a managed run, or with run_id None one made outside any run (the
        playground's), of `agent` in `tenant_id`: it answers to their budgets only."""
        if run_id is not None:
            tenant_id, agent = self._run(run_id)
            windows = self._windows_of(run_id, tenant_id, agent)
        else:
            windows = budgets.windows_for(tenant_id=tenant_id, agent=agent, run_id=None)
        r = Reservation(uuid.uuid4(), tenant_id, run_id, kind, 0, windows)
        if kind == CostKind.LLM:
            r.price = price_for(
                tenant_id=tenant_id,
                provider=PROVIDER,
                model=request.get("model", ""),
                day=timezone.now().date(),
            )
            if r.price is None:
                r.detail = {"model": request.get("model", ""), "cost_unknown": True}
                if windows:
                    raise BudgetRefused(
                        f"model {request.get('model')!r} has no price, so "
                        f"{windows[0].label} cannot be held to"
                    )
            else:
                tokens_in = estimate_input_tokens(request)
                tokens_out = int(request.get("max_tokens") or 0)
                worst_in = max(r.price.input, r.price.cache_write)
                r.amount_nusd = int((tokens_in * worst_in + tokens_out * r.price.output) * 1000) + 1
                r.detail = {
                    "model": r.price.model,
                    "estimated_input_tokens": tokens_in,
                    "max_tokens": tokens_out,
                }
        elif kind == CostKind.TOOL:
            r.amount_nusd = to_nusd(platform_price("tool_call_usd"))
            r.detail = {"tool": str(request.get("name", ""))}
        elif kind == CostKind.SANDBOX:
            seconds = Decimal(str(request.get("cpu_seconds", 0)))
            r.amount_nusd = to_nusd(seconds * platform_price("sandbox_cpu_second_usd"))
            r.detail = {"cpu_seconds_limit": float(seconds)}
        if not windows:
            return r  # nothing to hold: the settlement alone is written
        # A tool call's price is known before it is made: charged in the one UPDATE that
        # checks the cap, so the call costs the store one write, not two.
        charge = kind == CostKind.TOOL
        if not charge and run_id is not None:
            r.hold = Hold(tenant_id, run_id, r.id.hex, str(kind))
        try:
            spent = self.store.reserve(windows, r.amount_nusd, charge=charge, hold=r.hold)
        except Refused as exc:
            budgets.cap_refused(window=exc.window, store=self.store)
            raise BudgetRefused(f"{exc.window.label} would be passed by this call") from None
        except Unreachable as exc:
            if not _fail_open(tenant_id, run_id=run_id, during=str(kind)):
                raise BudgetRefused(f"the budget store cannot be reached: {exc}") from None
            log.warning("run %s: budget store unreachable, tenant opted out: %s", run_id, exc)
            r.windows = []
        else:
            if charge:
                r.charged = True
                budgets.thresholds_record(windows=windows, spent_after=spent, added=r.amount_nusd)
            elif kind == CostKind.LLM:
                r.reserved_row = (LedgerKind.RESERVE, r.amount_nusd, r.detail, timezone.now())
            else:
                self._defer(r, [(LedgerKind.RESERVE, r.amount_nusd, r.detail)])
        return r

    def settle(self, *, reservation: Reservation | None, usage: dict | None) -> int:
        """Settle the call's actual cost (0 when it failed upstream); returns it."""
        r = reservation
        if r is None:
            return 0
        actual, detail = self._actual(r, usage or {})
        entries = [(LedgerKind.SETTLE, actual, detail)]
        if r.reserved_row is not None:
            self._defer(r, [r.reserved_row[:3]], at=r.reserved_row[3])
        if r.charged:
            if actual != r.amount_nusd:  # charged, then not called: given back
                self._refund(r, r.amount_nusd - actual)
            self._defer(r, entries, usage=actual)
            return actual
        if r.windows and r.amount_nusd > actual:
            entries.append((LedgerKind.RELEASE, r.amount_nusd - actual, {}))
        if r.windows:
            try:
                spent = self.store.settle(r.windows, r.amount_nusd, actual, hold=r.hold)
            except Unreachable:
                # The money was spent either way; the ledger keeps it, and the
                # reservation stays held until the window's period ends.
                log.exception("run %s: could not settle in the budget store", r.run_id)
            else:
                # Its own transaction when a threshold was reached (rare), as with the
                # Redis store: the window's update does not wait for it.
                budgets.thresholds_record(windows=r.windows, spent_after=spent, added=actual)
        # LLM calls reach the roll-ups through their spans; the rest from here.
        self._defer(r, entries, usage=actual if r.kind != CostKind.LLM else 0)
        return actual

    def settle_journaled(self, *, settlements: list[tuple], write) -> None:
        """Write a call's journal step (`write()`) and settle the LLM calls it made,
        [(reservation, usage)], in one commit: a step is never journaled with its
        calls unsettled, nor settled without its step. On the database store the
        windows' UPDATEs join that transaction (last, so their rows stay locked for the
        shortest time); on Redis the settlements' ledger rows do, and the script runs
        once it committed (reconcile() covers a death in between)."""
        settled = [(r, *self._actual(r, usage or {})) for r, usage in settlements if r]
        ledger, now = [], timezone.now()
        for r, actual, detail in settled:
            if r.reserved_row is not None:
                ledger += self._ledger_rows(r, [r.reserved_row[:3]], r.reserved_row[3])
            entries = [(LedgerKind.SETTLE, actual, detail)]
            if r.windows and r.amount_nusd > actual:
                entries.append((LedgerKind.RELEASE, r.amount_nusd - actual, {}))
            ledger += self._ledger_rows(r, entries, now)
        from execution.services import LeaseLost

        joined = self.store.in_database
        spent = {}
        try:
            with write_turn() if joined else nullcontext(), transaction.atomic():
                write()
                if ledger:
                    _ledger_insert(ledger)
                if joined:
                    for r, actual, _ in settled:
                        if r.windows:
                            spent[r.id] = self.store.settle(
                                r.windows, r.amount_nusd, actual, hold=r.hold, joined=True
                            )
        except LeaseLost:
            # Another worker has the run (it reconciled our holds when it took it up):
            # the step is not journaled here, but its calls were made and paid for, so
            # they are settled alone, or their holds would stay held.
            for r, usage in settlements:
                self.settle(reservation=r, usage=usage)
            raise
        for r, actual, _ in settled:
            if not r.windows:
                continue
            if not joined:
                try:
                    spent[r.id] = self.store.settle(r.windows, r.amount_nusd, actual, hold=r.hold)
                except Unreachable:
                    # The ledger has the settlement; reconcile() applies it once the
                    # store is back and the run is taken up again.
                    log.exception("run %s: could not settle in the budget store", r.run_id)
                    continue
            budgets.thresholds_record(windows=r.windows, spent_after=spent[r.id], added=actual)

    def reconcile(self, *, run_id: int) -> None:
        """Settle or give back what a dead worker of this run left held: the holds its
        reservations recorded (a Redis record, a BudgetHold row) that no settlement
        deleted. The ledger says which: a hold whose settlement is there was settled by
        that row, any other is released, with a ledger row saying so."""
        from billing.models import LedgerEntry

        tenant_id, _agent = self._run(run_id)
        settled = dict(
            (r.hex, amount)
            for r, amount in LedgerEntry.objects.unscoped()
            .filter(tenant_id=tenant_id, run_id=run_id, entry=LedgerKind.SETTLE)
            .values_list("reservation", "amount_nusd")
        )
        try:
            released = self.store.reconcile(tenant_id=tenant_id, run_id=run_id, settled=settled)
        except Unreachable:
            log.exception("run %s: could not reconcile its holds in the budget store", run_id)
            return
        if released:
            now = timezone.now()
            _ledger_insert(
                [
                    (tenant_id, run_id, uuid.UUID(rid), LedgerKind.RELEASE, kind,
                     amount, {"reconciled": True}, now)
                    for rid, kind, amount in released
                ]
            )  # fmt: skip

    def _refund(self, r: Reservation, amount: int) -> None:
        try:
            self.store.settle(r.windows, 0, -amount)
        except Unreachable:
            log.exception("run %s: could not give a charge back in the budget store", r.run_id)

    def _actual(self, r: Reservation, usage: dict) -> tuple[int, dict]:
        if r.kind == CostKind.LLM:
            if r.price is None or not usage:
                return 0, {**r.detail, "usage": usage or None}
            tokens = {
                "input_tokens": int(usage.get("input_tokens") or 0),
                "output_tokens": int(usage.get("output_tokens") or 0),
                "cache_read": int(usage.get("cache_read_input_tokens") or 0),
                "cache_write": int(usage.get("cache_creation_input_tokens") or 0),
            }
            return r.price.cost_nusd(**tokens), {
                "model": r.price.model,
                **tokens,
                "price_version": r.price.version,
                "price_override": r.price.override,
            }
        if r.kind == CostKind.TOOL:
            return (r.amount_nusd if usage.get("called", True) else 0), r.detail
        if r.kind == CostKind.SANDBOX:
            seconds = Decimal(str(usage.get("cpu_seconds", 0)))
            cost = to_nusd(seconds * platform_price("sandbox_cpu_second_usd"))
            return cost, {"cpu_seconds": float(seconds)}
        return 0, r.detail

    # --- the batched ledger --------------------------------------------------------

    @staticmethod
    def _ledger_rows(r: Reservation, entries: list, now) -> list[tuple]:
        held = [w.budget_id for w in r.windows]
        return [
            (r.tenant_id, r.run_id, r.id, entry, r.kind, amount,
             {**detail, "budgets": held} if held else detail, now)
            for entry, amount, detail in entries
        ]  # fmt: skip

    def _defer(self, r: Reservation, entries: list, usage: int = 0, at=None) -> None:
        now = at or timezone.now()
        with self._lock:
            if not self._rows:
                self._held_since = time.monotonic()
            self._rows += self._ledger_rows(r, entries, now)
            if usage:
                key = (r.tenant_id, now.date(), str(r.kind), self._run(r.run_id)[1], r.run_id)
                sums = self._usage.setdefault(key, [0, 0])
                sums[0] += usage
                sums[1] += 1
            due = (
                len(self._rows) >= FLUSH_ROWS
                or time.monotonic() - self._held_since >= FLUSH_SECONDS
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the ledger rows and roll-ups held back, in one transaction."""
        with self._lock:
            held, self._rows = self._rows, []
            usage, self._usage = self._usage, {}
        if not held and not usage:
            return
        from billing.costs import usage_add

        try:
            with write_turn(), transaction.atomic():
                _ledger_insert(held)
                for (tenant_id, day, kind, agent, run_id), (cost, calls) in usage.items():
                    usage_add(
                        tenant_id=tenant_id,
                        kind=kind,
                        agent=agent,
                        run_id=run_id,
                        cost_nusd=cost,
                        calls=calls,
                        day=day,
                    )
        except Exception:
            with self._lock:  # kept for the next flush, in their order
                self._rows[:0] = held
                for key, (cost, calls) in usage.items():
                    sums = self._usage.setdefault(key, [0, 0])
                    sums[0] += cost
                    sums[1] += calls
            raise


def _ledger_insert(held: list[tuple]) -> None:
    """One INSERT without the ORM for ledger rows made by _ledger_rows."""
    native_uuid = connection.features.has_native_uuid_field
    adapt = connection.ops.adapt_datetimefield_value
    rows.insert_ignoring_conflicts(
        "billing_ledgerentry",
        LEDGER_COLUMNS,
        [
            (t, run, rid if native_uuid else rid.hex, entry, str(kind), amount,
             rows.json_param(detail), adapt(at))
            for t, run, rid, entry, kind, amount, detail, at in held
        ],
    )  # fmt: skip
