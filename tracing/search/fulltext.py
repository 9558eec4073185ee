"""Full-text search over the indexed texts: PostgreSQL's segments or SQLite FTS5.

Both sides tokenise the same way for the words people type (letters and digits;
punctuation and underscores split words), and every term is a prefix match, so
`ship` finds "shipped" and `lookup_order` finds the tool of that name. The 'simple'
configuration neither stems nor drops stop words: agents speak many languages, and
identifiers in tool payloads should match as typed.

A trace matches when every term occurs in its texts, not necessarily in the same one:
a user looking for "refund 4471" means the conversation where both came up, and they
are often in different messages (the question, a tool's result). Both backends post
terms per trace, which gives that directly: on PostgreSQL each term's trace row ids are
read from the index (segments.py) and intersected, and the ids joined to the traces.

Raw SQL takes tenant_id explicitly (CONVENTIONS.md), here through the caller.
"""

import re

from django.db import connection

from tracing.search.segments import SEARCHED_TIERS, rows_matching

MAX_TERMS = 12
_TERM = re.compile(r"[^\W_]+")


def terms(query: str) -> list[str]:
    return [t.lower() for t in _TERM.findall(query)][:MAX_TERMS]


def _lexemes(words: list[str]) -> list[str]:
    """The query's terms as PostgreSQL's 'simple' configuration folds them (its lower(),
    not Python's), the way the texts' terms were folded."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('simple', w))) "
            "FROM unnest(%s::text[]) AS u(w)",
            [words],
        )
        return [lexeme for (lexeme,) in cursor.fetchall()]


def traces_matching_sql(tenant_id: int, query: str) -> tuple[str, list] | None:
    """SQL selecting the trace_ids whose texts hold every term, or None for no terms."""
    words = terms(query)
    if not words:
        return None
    if connection.vendor == "postgresql":
        rows = rows_matching(tenant_id=tenant_id, prefixes=_lexemes(words))
        # The index may name traces removed since, or gone cold; the join by primary
        # key keeps those still searched.
        # The ids go as one array literal: adapting a list of thousands of ints
        # parameter by parameter took longer than the search.
        return (
            "SELECT t.trace_id FROM tracing_trace t WHERE t.tenant_id = %s "
            "AND t.id = ANY(%s::bigint[]) AND t.tier = ANY(%s::smallint[])",
            [tenant_id, "{" + ",".join(map(str, rows)) + "}", list(SEARCHED_TIERS)],
        )
    match = " ".join(f'"{w}"*' for w in words)
    # CROSS JOIN fixes the join order in SQLite: the FTS match first, then the trace
    # rows by rowid. Left to itself the planner may walk the tenant's traces and run the
    # match once per row. A rowid is a trace's row id; the tenant check keeps another
    # tenant's trace out of the subquery as well as out of the list around it.
    return (
        "SELECT t.trace_id FROM tracing_searchtrace "
        "CROSS JOIN tracing_trace t ON t.id = tracing_searchtrace.rowid "
        "WHERE tracing_searchtrace MATCH %s AND t.tenant_id = %s",
        [match, tenant_id],
    )
