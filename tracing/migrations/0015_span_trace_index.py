"""On PostgreSQL, spans are indexed by (tenant, trace) instead of a unique key.

A unique key of (tenant, trace id, span id) takes about 65 bytes a span: three random
values, in pages that random inserts leave two-thirds full. An index of the trace
alone deduplicates (one entry a trace, a 6-byte pointer a span) and serves what the
key served: a trace's spans, a span of a trace, the ingest path's "stored already?".
The ingest path keeps spans unique by taking turns per trace (rows.lock_traces).

The model keeps its composite primary key, which Django needs and SQLite keeps.
"""

from django.db import migrations


class SpanTraceIndex(migrations.operations.base.Operation):
    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute("CREATE INDEX span_trace ON tracing_span (tenant_id, trace_id)")
            schema_editor.execute("ALTER TABLE tracing_span DROP CONSTRAINT tracing_span_pkey")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                "ALTER TABLE tracing_span ADD PRIMARY KEY (tenant_id, trace_id, span_id)"
            )
            schema_editor.execute("DROP INDEX span_trace")

    def describe(self):
        return "Index spans by trace on PostgreSQL"


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0014_payload_digest_key"),
    ]

    operations = [SpanTraceIndex()]
