"""Attribute filters: which traces carry a key=value (`models.attribute_pair`).

- PostgreSQL: the pairs are terms of the search index's segments (segments.py),
  posted with the trace's text terms under its row id (index.py). A row per (pair,
  trace) cost a heap tuple and a primary-key entry, about 100 bytes; a posting in a
  segment costs a few. tracing_traceattribute stays empty there.
- SQLite: tracing_traceattribute, keyed by the whole row, WITHOUT ROWID (one b-tree).

Both backends answer a filter with the traces carrying any of a set of pairs, as a
Trace filter, so callers never ask which backend they run on.
"""

from django.db import connection
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

from tracing.models import TraceAttribute
from tracing.search.segments import SEARCHED_TIERS, rows_holding

# Block terms are joined by NUL, so a raw digest cannot be a term. No text term starts
# with a control character: to_tsvector's parser splits words at them, and a query's
# terms are its letters and digits, so no full-text search reaches an attribute term,
# even as a prefix. All attribute terms have one length, so none is another's prefix.
TERM_PREFIX = "\x01"


def attribute_term(pair: int) -> str:
    """A pair as a term of PostgreSQL's index: TERM_PREFIX and 16 hex digits."""
    return f"{TERM_PREFIX}{pair & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def traces_having(*, tenant_id: int, pairs: list[int]) -> Q:
    """A filter of Trace rows: those carrying any of the pairs."""
    if connection.vendor != "postgresql":
        return Q(trace_id__in=TraceAttribute.objects.filter(pair__in=pairs).values("trace_id"))
    rows = rows_holding(tenant_id=tenant_id, terms=[attribute_term(p) for p in pairs])
    if not rows:
        return Q(pk__in=[])
    # The index may name traces removed since, or gone cold (a cold trace is listed by
    # its summary only, as fulltext.py treats it). The ids go as one array literal:
    # adapting thousands of ints one parameter each costs more than the lookup. As
    # `= ANY(array)` (hashed) the planner can walk the newest traces and stop at a
    # page; as `IN (SELECT unnest(...))` it joined them all first (3.0 against 0.8 ms
    # for a page of 1,587 matches among 4,763 traces).
    held = RawSQL(
        '"tracing_trace"."id" = ANY(%s::bigint[])',
        ["{" + ",".join(map(str, rows)) + "}"],
        output_field=BooleanField(),
    )
    return Q(held, tier__in=SEARCHED_TIERS)
