"""On SQLite, full-text search keeps one FTS5 document per trace instead of one per
distinct text plus a link row per text per trace.

The links (tracing_tracetext, about 30 bytes each with its key) and the per-text rows
(tracing_searchtext and its digest key) were a third of what the embedded default
stored at 10 steps. A contentless FTS5 table keyed by the trace's row id needs neither:
its postings are the index, and detail=none keeps one posting per term per trace.

- Search matches a trace when every query term occurs somewhere in its texts, on both
  backends (tracing/search/fulltext.py), which is what one document per trace gives.
- A later batch of the trace's spans inserts more terms under the same rowid: a
  contentless table does not check rowids, and FTS5 merges a term's postings of one
  rowid into one.
- SQLite 3.40 has no contentless_delete: retention takes a trace out with FTS5's
  'delete' command given the trace's texts again (they are in the payload store or
  the trace's bundle). Trace ids are AUTOINCREMENT, never handed out again, so a term
  left behind matches no trace.

PostgreSQL is unchanged (a stripped tsvector per distinct text and its links).
The old FTS5 table held no text to move, so on SQLite the index starts empty:
`manage.py index_traces` fills it from the stored spans, as after 0018. Backwards does
the same the other way.
"""

from django.db import migrations

TRACE_DOCUMENTS = (
    "CREATE VIRTUAL TABLE tracing_searchtrace USING fts5("
    "document, content='', detail=none, columnsize=0)"
)
TEXT_DOCUMENTS = (
    "CREATE VIRTUAL TABLE tracing_searchtext_fts USING fts5("
    "document, content='', detail=none, columnsize=0)"
)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    execute = schema_editor.execute
    execute("DROP TABLE IF EXISTS tracing_searchtext_fts")
    execute("DELETE FROM tracing_tracetext")
    execute("DELETE FROM tracing_searchtext")
    execute(TRACE_DOCUMENTS)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    schema_editor.execute("DROP TABLE IF EXISTS tracing_searchtrace")
    schema_editor.execute(TEXT_DOCUMENTS)


class Migration(migrations.Migration):
    dependencies = [("tracing", "0023_span_list_and_archive_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]
