"""Full-text search over the indexed texts: PostgreSQL tsvector or SQLite FTS5.

Both sides tokenise the same way for the words people type (letters and digits;
punctuation and underscores split words), and every term is a prefix match, so
`ship` finds "shipped" and `lookup_order` finds the tool of that name. The 'simple'
configuration neither stems nor drops stop words: agents speak many languages, and
identifiers in tool payloads should match as typed. All terms must match (AND).

Raw SQL takes tenant_id explicitly (CONVENTIONS.md), here through the caller.
"""

import re

from django.db import connection

MAX_TERMS = 12
_TERM = re.compile(r"[^\W_]+")


def terms(query: str) -> list[str]:
    return [t.lower() for t in _TERM.findall(query)][:MAX_TERMS]


def traces_matching_sql(tenant_id: int, query: str) -> tuple[str, list] | None:
    """SQL selecting the trace_ids whose texts match every term, or None for no terms."""
    words = terms(query)
    if not words:
        return None
    if connection.vendor == "postgresql":
        # Terms hold only letters and digits, so they are safe in tsquery syntax.
        tsquery = " & ".join(f"{w}:*" for w in words)
        return (
            "SELECT tt.trace_id FROM tracing_searchtext st "
            "JOIN tracing_tracetext tt ON tt.tenant_id = st.tenant_id AND tt.text_id = st.id "
            "WHERE st.tenant_id = %s AND st.document @@ to_tsquery('simple', %s)",
            [tenant_id, tsquery],
        )
    match = " ".join(f'"{w}"*' for w in words)
    # CROSS JOIN fixes the join order in SQLite: the FTS match first, then the traces
    # that list its rows (tracetext's key leads with the text). Left to itself the
    # planner walks every trace text and runs the match once per row (seconds instead of
    # milliseconds at 100,000 spans). A rowid is one tenant's text: the tenant's own
    # links are the only ones that can name it.
    return (
        "SELECT tt.trace_id FROM tracing_searchtext_fts "
        "CROSS JOIN tracing_tracetext tt "
        "ON tt.tenant_id = %s AND tt.text_id = tracing_searchtext_fts.rowid "
        "WHERE tracing_searchtext_fts MATCH %s",
        [tenant_id, match],
    )
