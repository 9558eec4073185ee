"""PostgreSQL's search index becomes an inverted index of its own
(tracing/search/segments.py): blocks of terms with the delta-coded row ids of the traces
holding them, zstd-compressed, instead of a stripped tsvector per trace with a GIN
index, which repeated the vocabulary in every trace and cost GIN about 10 bytes a
(term, trace) pair: 3.85 MB for 200 traces of 10 steps, more than their payloads.

The new index starts empty: `manage.py index_traces` fills it from the stored spans
(as after 0024 on SQLite). On SQLite tracing_searchblock stays empty, as
tracing_tracedocument did.
"""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE SEQUENCE tracing_searchsegment_seq")
    # The blocks are zstd already: pglz would only spend time failing to shrink them.
    schema_editor.execute("ALTER TABLE tracing_searchblock ALTER COLUMN data SET STORAGE EXTERNAL")
    # Every merge deletes the blocks it folded: vacuum soon after, so the next segments
    # reuse their pages instead of growing the table by what merges rewrote.
    schema_editor.execute(
        "ALTER TABLE tracing_searchblock SET (autovacuum_vacuum_scale_factor = 0, "
        "autovacuum_vacuum_threshold = 16, toast.autovacuum_vacuum_scale_factor = 0, "
        "toast.autovacuum_vacuum_threshold = 64)"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP SEQUENCE IF EXISTS tracing_searchsegment_seq")


def old_gin(apps, schema_editor):
    """Backwards, once tracing_tracedocument is back: its GIN index, as 0026 made it."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX tracedocument_document_gin ON tracing_tracedocument "
            "USING gin (document) WITH (fastupdate = off)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0005_tenant_payload_sweeps"),
        ("tracing", "0027_traceattribute_pair"),
    ]

    operations = [
        migrations.CreateModel(
            name="SearchBlock",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant",
                        "segment",
                        "first_term",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("segment", models.BigIntegerField()),
                ("level", models.SmallIntegerField()),
                ("first_term", models.BinaryField()),
                ("last_term", models.BinaryField()),
                ("data", models.BinaryField()),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="controlplane.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
                "default_manager_name": "all_tenants",
            },
            managers=[
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RunPython(migrations.RunPython.noop, old_gin),
        migrations.DeleteModel(
            name="TraceDocument",
        ),
    ]
