"""Two lookups retention makes without scanning the tenant:

- `payload_span_list_trace`: the SPAN_LIST payloads whose head is a trace's id, found
  when that trace leaves the hot tier (a partial index: only SPAN_LIST rows are in it).
- `trace_archive_span_ids` (PostgreSQL): the warm or cold trace holding a span id, for
  `GET /api/v1/spans/{id}` without its trace. A GIN index over `archive -> 'span_ids'`
  (jsonb_path_ops: containment only, the smallest entries). SQLite has no GIN index and
  reads the archived traces' lists (tracing/retention/selectors.py).
"""

from django.db import migrations, models


def _span_ids_index(create: bool):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        if create:
            schema_editor.execute(
                "CREATE INDEX trace_archive_span_ids ON tracing_trace "
                "USING gin ((archive -> 'span_ids') jsonb_path_ops)"
            )
        else:
            schema_editor.execute("DROP INDEX IF EXISTS trace_archive_span_ids")

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0004_periodicclaim"),
        ("tracing", "0022_retention"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="payload",
            index=models.Index(
                models.F("tenant"),
                models.Func(
                    models.F("data"),
                    models.Value(1),
                    models.Value(16),
                    function="substr",
                    output_field=models.BinaryField(),
                ),
                condition=models.Q(("kind", 5)),
                name="payload_span_list_trace",
            ),
        ),
        migrations.RunPython(_span_ids_index(True), _span_ids_index(False)),
    ]
