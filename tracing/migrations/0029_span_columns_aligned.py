"""On PostgreSQL, tracing_span is rebuilt with its columns widest first.

PostgreSQL lays a row's columns out in table order, each aligned to its type: the
smallints before 8-byte columns, the int4s after text and the tenant id after the
texts left up to 17 bytes of padding in a span's row (209 bytes on average on
bench/ingest.py's spans, 200 in this order: 901 -> 860 KB of table for 4,080 spans).
SQLite does not pad and keeps its table. Backwards rebuilds the former order.
"""

from django.db import migrations

FK = (
    "CONSTRAINT tracing_span_tenant_id_10b42943_fk_controlplane_tenant_id "
    "REFERENCES controlplane_tenant (id) DEFERRABLE INITIALLY DEFERRED"
)
COLUMNS = {
    "tenant_id": f"bigint NOT NULL {FK}",
    "trace_id": "uuid NOT NULL",
    "span_id": "bigint NOT NULL",
    "parent_span_id": "bigint",
    "start_ns": "bigint NOT NULL",
    "end_ns": "bigint NOT NULL",
    "input_tokens": "integer",
    "output_tokens": "integer",
    "labels_id": "integer",
    "kind": "smallint NOT NULL",
    "status_code": "smallint NOT NULL",
    "name": "varchar(255)",
    "status_message": "text NOT NULL",
    "session_id": "varchar(255) NOT NULL",
    "run_id": "varchar(64) NOT NULL",
    "tool_call_id": "varchar(255) NOT NULL",
    "detail_packed": "bytea NOT NULL",
    "redactions": "jsonb",
}
ALIGNED = tuple(COLUMNS)
# The order the model's migrations left: created in field order, with the key's
# columns and labels added later.
FORMER = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
    "status_code", "status_message", "input_tokens", "output_tokens", "session_id",
    "run_id", "tool_call_id", "redactions", "tenant_id", "detail_packed", "labels_id",
)  # fmt: skip


def _rebuild(schema_editor, order: tuple) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    execute("ALTER TABLE tracing_span RENAME TO tracing_span_old")
    execute("DROP INDEX span_trace")
    execute(
        "ALTER TABLE tracing_span_old "
        "DROP CONSTRAINT tracing_span_tenant_id_10b42943_fk_controlplane_tenant_id"
    )
    execute(f"CREATE TABLE tracing_span ({', '.join(f'{c} {COLUMNS[c]}' for c in order)})")
    columns = ", ".join(order)
    # A trace's spans together, as a trace's reads want them.
    execute(
        f"INSERT INTO tracing_span ({columns}) SELECT {columns} FROM tracing_span_old "  # noqa: S608 - fixed names
        "ORDER BY tenant_id, trace_id, start_ns, span_id"
    )
    # The copied rows' deferred tenant checks run now: PostgreSQL builds no index on a
    # table with checks pending.
    execute("SET CONSTRAINTS ALL IMMEDIATE")
    execute("DROP TABLE tracing_span_old")
    execute("CREATE INDEX span_trace ON tracing_span (tenant_id, trace_id)")


def forwards(apps, schema_editor):
    _rebuild(schema_editor, ALIGNED)


def backwards(apps, schema_editor):
    _rebuild(schema_editor, FORMER)


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0028_search_blocks_postgres"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
