"""Cost on ingest: every LLM call's cost from its span's tokens and model, counted once,
and the roll-ups that reports read, kept incrementally.

A span of an LLM call (operation chat, text_completion or generate_content, with
token usage) gets one SpanCost row. Two spans that report the same call are counted
once (tracing.calls, the rule ingest applies to the trace's token sums): the same
`gen_ai.response.id` in one trace, or a parent and child both carrying usage
(OpenLLMetry's or OpenInference's span with the anthropic SDK's own span inside).
Whichever of them is stored first counts; the other keeps its figures with
counted=false.

Rows are inserted with ON CONFLICT DO NOTHING and only the rows a call inserted move
the roll-ups and budgets, so a task that runs twice (a redelivery) or a batch sent
again changes nothing. Batches of one trace take turns (a row lock on the trace), so
the once-only rule holds when two batches of one trace are costed at once.
"""

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from django.db import connection, transaction
from django.db.models import Q

from billing import budgets
from billing.models import CostKind, SpanCost, call_labels
from billing.prices import price_for
from billing.store import Unreachable, get_store, write_turn
from controlplane.tenancy import tenant_scope
from tracing import labels
from tracing.calls import LLM_OPERATIONS, CallReports, call_key
from tracing.ingest import rows
from tracing.ingest.normalise import USER_KEYS
from tracing.ingest.policy import tenant_redaction
from tracing.models import Span, Trace
from tracing.selectors import span_detail_unpack

CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
COST_COLUMNS = (
    "tenant_id", "trace_id", "span_id", "parent_span_id", "day", "call_key", "run_id",
    "labels_id", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cost_nusd", "price_version", "price_override", "counted", "over_budget",
)  # fmt: skip
_SUMS = ("cost_nusd", "input_tokens", "output_tokens", "cache_read_tokens",
         "cache_write_tokens", "calls", "unknown_calls")  # fmt: skip


INT32_MAX = 2**31 - 1  # SpanCost's token columns, as wide as a span's


def _first_int(attrs: dict, keys) -> int:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return min(max(int(value), 0), INT32_MAX)
    return 0


def _day(ns: int):
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).date()


@dataclass(slots=True)
class _Call:
    """The columns of a stored span that costing reads (no Span instance: a batch's
    worth of model instances costs more than the costing itself)."""

    trace_id: uuid.UUID
    span_id: int
    parent_span_id: int | None
    start_ns: int
    labels_id: int | None
    session_id: str
    run_id: str
    input_tokens: int | None
    output_tokens: int | None
    detail_packed: bytes


CALL_COLUMNS = tuple(f.name for f in fields(_Call))


def _wanted(spans: list[tuple[str, str]]) -> dict[uuid.UUID, set[int]]:
    by_hex: dict[str, set[int]] = defaultdict(set)
    for trace_hex, span_hex in spans:
        by_hex[trace_hex].add(int.from_bytes(bytes.fromhex(span_hex), "big", signed=True))
    return {uuid.UUID(hex=t): ids for t, ids in by_hex.items()}


def spans_cost(*, tenant_id: int, spans: list[tuple[str, str]]) -> int:
    """Cost the newly stored spans [(trace id hex, span id hex)]; returns how many LLM
    calls this call recorded. Safe to run twice."""
    wanted = _wanted(spans)
    if not wanted:
        return 0
    span_ids = set().union(*wanted.values())
    with tenant_scope(tenant_id), write_turn(), transaction.atomic():
        # Batches of these traces take turns from here to commit; each trace's user is
        # the one its calls count toward when they name none of their own.
        trace_users = dict(
            Trace.objects.select_for_update()
            .filter(trace_id__in=wanted).order_by("trace_id").values_list("trace_id", "user_id")
        )  # fmt: skip
        # Only this batch's spans with usage: the traces' earlier spans are not read again.
        candidates = [
            _Call(*row) for row in Span.objects.filter(trace_id__in=wanted, span_id__in=span_ids)
            .filter(Q(input_tokens__isnull=False) | Q(output_tokens__isnull=False))
            .values_list(*CALL_COLUMNS)
            if row[1] in wanted[row[0]]
        ]  # fmt: skip
        if not candidates:
            return 0
        values = labels.values_of(tenant_id, {s.labels_id for s in candidates})
        candidates = [s for s in candidates if values[s.labels_id]["operation"] in LLM_OPERATIONS]
        new_rows = _cost_rows(tenant_id, candidates, values, trace_users)
        if not new_rows:
            return 0
        # Each trace id as the database stores it, and answers it back.
        stored = {t: rows.uuid_param(t) for t in wanted}
        by_key = {(stored[r["trace_id"]], r["span_id"]): r for r in new_rows}
        inserted = rows.insert_ignoring_conflicts(
            "billing_spancost", COST_COLUMNS, _params(new_rows, stored),
            returning=("trace_id", "span_id"),
        )  # fmt: skip
        mine = [by_key[(_stored_uuid(t), s)] for t, s in inserted]
        _rollups_add(tenant_id, [r for r in mine if r["counted"]])
        _charge_external(tenant_id, [r for r in mine if r["counted"] and r["cost_nusd"]])
    return len(mine)


def _stored_uuid(value):
    """A returned trace id in the form uuid_param gives (SQLite answers a blob, which
    may come back as a memoryview)."""
    return value if isinstance(value, uuid.UUID | bytes) else bytes(value)


def _span_user(attrs: dict, redactor, trace_user: str) -> str:
    """The user a call counts toward: the span's own (the span path's keys), redacted
    as the trace's user column is so that the two agree, else its trace's."""
    for key in USER_KEYS:
        value = attrs.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return redactor.redact_short(str(value), Counter())[:255]
    return trace_user or ""


def _cost_rows(
    tenant_id: int, candidates: list[_Call], values: dict, trace_users: dict
) -> list[dict]:
    traces = {s.trace_id for s in candidates}
    # The calls reported already in these traces. A span costed already (a redelivery,
    # a batch sent again) is left out here: PostgreSQL has no unique key to refuse its
    # second row, and the traces' row locks make this read the one that decides.
    reports = CallReports()
    stored = SpanCost.objects.filter(trace_id__in=traces).values_list(
        "trace_id", "span_id", "parent_span_id", "call_key"
    )
    costed = set()
    for row in stored:
        reports.add(*row)
        costed.add((row[0], row[1]))
    candidates = [s for s in candidates if (s.trace_id, s.span_id) not in costed]
    prices: dict[tuple, object] = {}  # one lookup per provider, model and day in a batch
    redactor = tenant_redaction(tenant_id).redactor
    out = []
    # Parents start first: within a batch the outer span of a call counts.
    for s in sorted(candidates, key=lambda s: (s.trace_id, s.start_ns, s.span_id)):
        agent, provider, model = call_labels(values[s.labels_id])
        attrs = span_detail_unpack(tenant_id=tenant_id, packed=s.detail_packed).get(
            "attributes", {}
        )
        key = call_key(attrs)
        duplicate = not reports.counts(s.trace_id, s.span_id, s.parent_span_id, key)
        day = _day(s.start_ns)
        row = {
            "tenant_id": tenant_id, "trace_id": s.trace_id, "span_id": s.span_id,
            "parent_span_id": s.parent_span_id, "day": day, "call_key": key,
            "agent_name": agent, "session_id": s.session_id, "run_id": s.run_id,
            "labels_id": s.labels_id, "model": model,
            "user_id": _span_user(attrs, redactor, trace_users.get(s.trace_id, "")),
            "input_tokens": s.input_tokens or 0, "output_tokens": s.output_tokens or 0,
            "cache_read_tokens": _first_int(attrs, CACHE_READ_KEYS),
            "cache_write_tokens": _first_int(attrs, CACHE_WRITE_KEYS),
            "cost_nusd": None, "price_version": None, "price_override": False,
            "counted": not duplicate, "over_budget": False,
        }  # fmt: skip
        book = (provider, model, day)
        if book not in prices:
            prices[book] = price_for(tenant_id=tenant_id, provider=book[0], model=model, day=day)
        price = prices[book]
        if price is not None:
            row["cost_nusd"] = price.cost_nusd(
                input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                cache_read=row["cache_read_tokens"], cache_write=row["cache_write_tokens"],
            )  # fmt: skip
            row["price_version"], row["price_override"] = price.version, price.override
        out.append(row)
    return out


def _params(new_rows: list[dict], stored: dict) -> list[tuple]:
    """The rows as INSERT parameters, in COST_COLUMNS' order; `stored`: each trace id
    as the database stores it."""
    adapt = connection.ops.adapt_datefield_value
    days = {r["day"]: adapt(r["day"]) for r in new_rows}
    return [
        tuple(
            stored[r["trace_id"]] if c == "trace_id" else days[r["day"]] if c == "day" else r[c]
            for c in COST_COLUMNS
        )
        for r in new_rows
    ]


def _sums(row: dict) -> list:
    unknown = row["cost_nusd"] is None
    return [row["cost_nusd"] or 0, row["input_tokens"], row["output_tokens"],
            row["cache_read_tokens"], row["cache_write_tokens"], 1, int(unknown)]  # fmt: skip


def _add(totals: dict, key, sums: list) -> None:
    held = totals.get(key)
    totals[key] = sums if held is None else [a + b for a, b in zip(held, sums, strict=True)]


def _rollups_add(tenant_id: int, counted: list[dict]) -> None:
    daily, totals = {}, {}
    for r in counted:
        sums = _sums(r)
        _add(daily, (r["day"], CostKind.LLM, r["agent_name"], r["model"], r["user_id"]), sums)
        _add(totals, ("trace", r["trace_id"].hex), sums)
        if r["run_id"]:
            _add(totals, ("run", r["run_id"]), sums)
        if r["session_id"]:
            _add(totals, ("session", r["session_id"]), sums)
    _upsert_daily(tenant_id, daily)
    _upsert_totals(tenant_id, totals)


def _upsert(table: str, keys: tuple, rows_: list[tuple]) -> None:
    if not rows_:
        return
    columns = ("tenant_id", *keys, *_SUMS)
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _SUMS)
    with connection.cursor() as cursor:
        for start in range(0, len(rows_), 200):
            chunk = rows_[start : start + 200]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - fixed names
                f"{', '.join([placeholder] * len(chunk))} "
                f"ON CONFLICT (tenant_id, {', '.join(keys)}) DO UPDATE SET {adds}",
                [v for row in chunk for v in row],
            )


def _upsert_daily(tenant_id: int, daily: dict) -> None:
    adapt = connection.ops.adapt_datefield_value
    _upsert(
        "billing_usagedaily",
        ("day", "kind", "agent_name", "model", "user_id"),
        [
            (tenant_id, adapt(d), str(k), a[:255], m[:255], u, *s)
            for (d, k, a, m, u), s in daily.items()
        ],
    )


def _upsert_totals(tenant_id: int, totals: dict) -> None:
    _upsert(
        "billing_costtotal",
        ("dimension", "key"),
        [(tenant_id, dim, key[:255], *s) for (dim, key), s in totals.items()],
    )


def usage_add(
    *,
    tenant_id: int,
    kind: str,
    agent: str,
    run_id: int,
    cost_nusd: int,
    calls: int = 1,
    day=None,
) -> None:
    """Tool calls' and sandbox time's cost into the roll-ups (the gateway settled it)."""
    from django.utils import timezone

    sums = [cost_nusd, 0, 0, 0, 0, calls, 0]
    _upsert_daily(tenant_id, {(day or timezone.now().date(), kind, agent, "", ""): sums})
    _upsert_totals(tenant_id, {("run", str(run_id)): sums})


def _charge_external(tenant_id: int, costed: list[dict]) -> None:
    """External agents' calls count against the tenant's, their agent's and their user's
    budgets here (a managed run's calls were reserved and settled by its gateway). A
    call recorded while a budget is over its cap is flagged over_budget."""
    if not costed:
        return
    from execution.models import Run

    run_ids = {int(r["run_id"]) for r in costed if r["run_id"].isdigit()}
    managed = {
        str(pk) for pk in Run.objects.filter(pk__in=run_ids).values_list("pk", flat=True)
    } if run_ids else set()  # fmt: skip
    # The playground's calls were held to the budgets by replay.playground, like a run's.
    from replay.models import PlaygroundRun

    held = set(
        PlaygroundRun.objects.filter(
            trace_id__in={r["trace_id"].hex for r in costed if not r["run_id"]}
        ).values_list("trace_id", flat=True)
    )
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in costed:
        if r["run_id"] not in managed and r["trace_id"].hex not in held:
            groups[(r["agent_name"], r["user_id"], r["day"])].append(r)
    store = get_store()
    for (agent, user, day), group in groups.items():
        windows = budgets.windows_for(
            tenant_id=tenant_id, agent=agent, run_id=None, day=day, user=user
        )
        if not windows:
            continue
        amount = sum(r["cost_nusd"] for r in group)
        try:
            spent = store.settle(windows, 0, amount)
        except Unreachable:
            # The spans are stored and costed; the budgets miss this spend, and the
            # log says so (the tenant's roll-ups still have it).
            import logging

            logging.getLogger(__name__).exception("budget store unreachable: spend not charged")
            continue
        budgets.thresholds_record(windows=windows, spent_after=spent, added=amount)
        if any(s > w.cap_nusd for w, s in zip(windows, spent, strict=True)):
            keys = Q()
            for r in group:
                keys |= Q(trace_id=r["trace_id"], span_id=r["span_id"])
            SpanCost.objects.filter(keys).update(over_budget=True)
