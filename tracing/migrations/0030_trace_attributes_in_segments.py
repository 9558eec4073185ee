"""On PostgreSQL, trace attributes move into the search index's segments.

Each (tenant, pair, trace) row of tracing_traceattribute cost PostgreSQL a heap tuple
and a primary-key entry, about 100 bytes (0.42 MB of bench/ingest.py's 200 traces of
10 steps); as terms of the segments (tracing/search/attributes.py) the same pairs take
a few bytes a posting. Each tenant's pairs of traces still searched (hot and warm)
are written as segments by today's segment writer, so they are the terms the filters
look up, and the table is emptied. SQLite keeps the table (WITHOUT ROWID, one b-tree)
and nothing changes there.

Backwards leaves the table empty; `manage.py index_traces` fills it again.
"""

from collections import defaultdict

from django.db import migrations

# (pair, trace) rows a segment: a page of them and its postings stay some MB in memory.
CHUNK = 100_000


def _move(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    from tracing.search.attributes import attribute_term
    from tracing.search.segments import SEARCHED_TIERS, segment_add

    with connection.cursor() as cursor:
        # Writers wait until the rows are moved and gone, so none is deleted unmoved.
        cursor.execute("LOCK TABLE tracing_traceattribute IN EXCLUSIVE MODE")
        cursor.execute("SELECT id FROM controlplane_tenant ORDER BY id")
        tenants = [tenant_id for (tenant_id,) in cursor.fetchall()]
    for tenant_id in tenants:
        with connection.chunked_cursor() as rows:
            rows.execute(
                "SELECT t.id, a.pair FROM tracing_traceattribute a "
                "JOIN tracing_trace t ON t.tenant_id = a.tenant_id AND t.trace_id = a.trace_id "
                "WHERE a.tenant_id = %s AND t.tier = ANY(%s::smallint[]) ORDER BY t.id",
                [tenant_id, list(SEARCHED_TIERS)],
            )
            # A segment a page; a trace split between two is the union of both.
            while page := rows.fetchmany(CHUNK):
                terms_by_row = defaultdict(set)
                for row_id, pair in page:
                    terms_by_row[row_id].add(attribute_term(pair))
                segment_add(tenant_id=tenant_id, terms_by_row=terms_by_row)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tracing_traceattribute")


class Migration(migrations.Migration):
    dependencies = [("tracing", "0029_span_columns_aligned")]

    operations = [migrations.RunPython(_move, migrations.RunPython.noop)]
