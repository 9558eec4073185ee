"""On PostgreSQL, full-text search keeps one document per trace, as SQLite does since
0024, instead of a tsvector per distinct text plus a link row per text per trace.

At 10 agent steps the per-text rows, their GIN index and the links were 59 % of what
PostgreSQL + S3 stored (bench/ingest.py), more than the payloads they were read from.
tracing_tracedocument holds, per trace, the stripped tsvector (no positions) of every
text the trace holds, GIN-indexed with `fastupdate` off (see 0021: the pending list's
pages are never given back); a later batch of the trace merges its terms into the row.

Its text form would be half the size (pglz does not compress a tsvector at all: 11.0
KB against 5.2 KB for a 10-step trace of bench/ingest.py), but a plan that filters
rows instead of reading the GIN index (a fresh or small table) parses every row's
text again: a search over 200 traces took seconds. The tsvector is read as stored.

- The documents are built from the old rows here, so search answers as before without
  re-reading any payload: a trace's document is the union of its texts' lexemes.
- A cold trace that still had links had its move killed before its texts left search;
  it gets the mark such a move leaves now (`search_listed`), so retention finishes it
  by the mark alone on both backends.
- On SQLite tracing_tracedocument stays empty (its index is tracing_searchtrace), and
  the two old tables, empty there since 0024, go on both backends.

Backwards recreates the old tables empty on PostgreSQL: `manage.py index_traces`
fills them.
"""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

import tracing.models


GIN = (
    "CREATE INDEX tracedocument_document_gin ON tracing_tracedocument "
    "USING gin (document) WITH (fastupdate = off)"
)
FROM_TEXTS = """
INSERT INTO tracing_tracedocument (trace_id, tenant_id, document)
SELECT t.id, t.tenant_id, array_to_tsvector(array_agg(DISTINCT lexeme))
FROM tracing_tracetext tt
JOIN tracing_searchtext st ON st.tenant_id = tt.tenant_id AND st.id = tt.text_id
JOIN tracing_trace t ON t.tenant_id = tt.tenant_id AND t.trace_id = tt.trace_id
CROSS JOIN LATERAL unnest(tsvector_to_array(st.document)) AS lexeme
GROUP BY t.id, t.tenant_id
"""
# Tier.COLD is 2; archive is jsonb on PostgreSQL.
MARK_COLD = """
UPDATE tracing_trace t SET archive = t.archive || '{"search_listed": true}'::jsonb
WHERE t.tier = 2 AND t.archive IS NOT NULL AND EXISTS (
    SELECT 1 FROM tracing_tracetext tt
    WHERE tt.tenant_id = t.tenant_id AND tt.trace_id = t.trace_id
)
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(GIN)
    schema_editor.execute(FROM_TEXTS)
    schema_editor.execute(MARK_COLD)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS tracedocument_document_gin")


def old_gin(apps, schema_editor):
    """Backwards, once the old tables are back: their GIN index, as 0003 and 0021 left it."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX searchtext_document_gin ON tracing_searchtext "
            "USING gin (document) WITH (fastupdate = off)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0004_periodicclaim"),
        ("tracing", "0025_storage_usage_places"),
    ]

    operations = [
        migrations.CreateModel(
            name="TraceDocument",
            fields=[
                (
                    "trace",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="tracing.trace",
                    ),
                ),
                ("document", tracing.models.SearchDocumentField()),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="controlplane.tenant",
                    ),
                ),
            ],
            options={"abstract": False, "default_manager_name": "all_tenants"},
            managers=[("all_tenants", django.db.models.manager.Manager())],
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RunPython(migrations.RunPython.noop, old_gin),
        migrations.DeleteModel(name="SearchText"),
        migrations.DeleteModel(name="TraceText"),
    ]
