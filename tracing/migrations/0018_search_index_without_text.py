"""The search index keeps the terms search needs and no copy of the text.

The texts were stored twice beside their zstd payloads: as plain text in
tracing_searchtext on SQLite (plus FTS5's own index of it), and as a tsvector with
every word's positions on PostgreSQL. Search needs neither: every term is a prefix
match, all terms ANDed, and no result shows a snippet from the index.

- PostgreSQL: the tsvector loses its positions (strip()): one entry per distinct word.
- SQLite: a contentless FTS5 table (content=''), without positions (detail=none) or
  document sizes (columnsize=0), written by the indexer itself; tracing_searchtext's
  document column stays NULL. SQLite 3.40 has no contentless_delete, so a removed text
  leaves its terms behind: the rowids are AUTOINCREMENT ids, never handed out again,
  and search joins on them, so stale terms match nothing.

Backwards on PostgreSQL keeps the stripped vectors (a search finds the same traces); on
SQLite it recreates the external-content table empty: `manage.py index_traces` fills it.
"""

from django.db import migrations

import tracing.models

CONTENTLESS = (
    "CREATE VIRTUAL TABLE tracing_searchtext_fts USING fts5("
    "document, content='', detail=none, columnsize=0)"
)
OLD_SQLITE = [
    "CREATE VIRTUAL TABLE tracing_searchtext_fts USING fts5("
    "document, content='tracing_searchtext', content_rowid='id')",
    "CREATE TRIGGER tracing_searchtext_ai AFTER INSERT ON tracing_searchtext BEGIN "
    "INSERT INTO tracing_searchtext_fts(rowid, document) VALUES (new.id, new.document); END",
    "CREATE TRIGGER tracing_searchtext_ad AFTER DELETE ON tracing_searchtext BEGIN "
    "INSERT INTO tracing_searchtext_fts(tracing_searchtext_fts, rowid, document) "
    "VALUES ('delete', old.id, old.document); END",
]


def forwards(apps, schema_editor):
    execute = schema_editor.execute
    if schema_editor.connection.vendor == "postgresql":
        execute("UPDATE tracing_searchtext SET document = strip(document)")
        return
    execute("DROP TRIGGER IF EXISTS tracing_searchtext_ai")
    execute("DROP TRIGGER IF EXISTS tracing_searchtext_ad")
    execute("ALTER TABLE tracing_searchtext_fts RENAME TO tracing_searchtext_fts_old")
    execute(CONTENTLESS)
    execute(
        "INSERT INTO tracing_searchtext_fts (rowid, document) "
        "SELECT id, document FROM tracing_searchtext WHERE document IS NOT NULL"
    )
    execute("DROP TABLE tracing_searchtext_fts_old")
    execute("UPDATE tracing_searchtext SET document = NULL")


def empty_documents(apps, schema_editor):
    """Backwards, before the column is NOT NULL again."""
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("UPDATE tracing_searchtext SET document = '' WHERE document IS NULL")


def old_fts(apps, schema_editor):
    """Backwards, last: after the column change, which rebuilds the table on SQLite and
    drops its triggers."""
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TABLE IF EXISTS tracing_searchtext_fts")
        for sql in OLD_SQLITE:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("tracing", "0017_redaction_scan_infrastructure")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, old_fts),
        migrations.AlterField(
            model_name="searchtext",
            name="document",
            field=tracing.models.SearchDocumentField(null=True),
        ),
        migrations.RunPython(forwards, empty_documents),
    ]
