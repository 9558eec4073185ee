"""tracing_traceattribute holds each key=value as an 8-byte digest (`attribute_pair`).

The filters only ask which traces have a key=value; the key and value text (about 40
bytes) was in every row and again in its primary key's entry: about 200 bytes a row
on PostgreSQL at 10 agent steps. (tenant, pair, trace) is now the row and its key,
56 bytes of data; WITHOUT ROWID on SQLite as before.

Existing rows are carried over, their pairs computed here. Backwards rebuilds the
former shape empty: digests do not give the text back, and `manage.py index_traces`
refills it from the stored spans.
"""

import hashlib

from django.db import migrations, models

FK = "REFERENCES controlplane_tenant (id) DEFERRABLE INITIALLY DEFERRED"
TRACE = {"sqlite": "blob", "postgresql": "uuid"}
TABLE = "tracing_traceattribute"
CHUNK = 2000


def attribute_pair(key: str, value: str) -> int:
    """tracing.models.attribute_pair as of this migration (stored digests never change)."""
    digest = hashlib.blake2b(f"{key}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _rebuild(schema_editor, columns: str, key: str):
    """The table renamed aside and a new one of `columns` keyed by `key` in its place;
    returns the old one's name (for the caller to copy from and drop)."""
    vendor = schema_editor.connection.vendor
    execute = schema_editor.execute
    execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_old")
    if vendor == "postgresql":
        # The key's index name is the schema's: free it before the new table takes it.
        execute(f"ALTER TABLE {TABLE}_old DROP CONSTRAINT IF EXISTS {TABLE}_pkey")
    rowid = " WITHOUT ROWID" if vendor == "sqlite" else ""
    execute(
        f"CREATE TABLE {TABLE} (tenant_id bigint NOT NULL {FK}, {columns}, "
        f"trace_id {TRACE[vendor]} NOT NULL, CONSTRAINT {TABLE}_pkey PRIMARY KEY ({key})){rowid}"
    )
    return f"{TABLE}_old"


def forwards(apps, schema_editor):
    old = _rebuild(schema_editor, "pair bigint NOT NULL", "tenant_id, pair, trace_id")
    conflict = " ON CONFLICT DO NOTHING"  # two pairs of one trace sharing a digest
    with schema_editor.connection.cursor() as read, schema_editor.connection.cursor() as write:
        read.execute(f"SELECT tenant_id, key, value, trace_id FROM {old}")  # noqa: S608 - fixed names
        while rows := read.fetchmany(CHUNK):
            write.executemany(
                f"INSERT INTO {TABLE} (tenant_id, pair, trace_id) VALUES (%s, %s, %s){conflict}",  # noqa: S608 - fixed names
                [(t, attribute_pair(k, v), trace) for t, k, v, trace in rows],
            )
    schema_editor.execute(f"DROP TABLE {old}")


def backwards(apps, schema_editor):
    old = _rebuild(
        schema_editor,
        "key varchar(255) NOT NULL, value varchar(255) NOT NULL",
        "tenant_id, key, value, trace_id",
    )
    schema_editor.execute(f"DROP TABLE {old}")


class Migration(migrations.Migration):
    dependencies = [("tracing", "0026_search_trace_documents_postgres")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AddField(
                    model_name="traceattribute",
                    name="pair",
                    field=models.BigIntegerField(default=0),
                    preserve_default=False,
                ),
                migrations.AlterField(
                    model_name="traceattribute",
                    name="pk",
                    field=models.CompositePrimaryKey(
                        "tenant",
                        "pair",
                        "trace_id",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                migrations.RemoveField(model_name="traceattribute", name="key"),
                migrations.RemoveField(model_name="traceattribute", name="value"),
            ],
        )
    ]
