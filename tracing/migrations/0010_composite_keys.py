"""Span and Payload are keyed by their own identity instead of a surrogate id.

Django does not migrate a table to a composite primary key by itself (on SQLite its
own operations would leave the table without any key), so NaturalKey does the
database side: on PostgreSQL it swaps the constraints in place; on SQLite, which
cannot change a table's key, it rebuilds the table from the new model and copies the
rows.
"""

from django.db import migrations, models
from django.db.migrations.operations.base import Operation


class NaturalKey(Operation):
    reversible = False

    def __init__(self, model_name, unique_name, state_operations):
        self.model_name = model_name
        self.unique_name = unique_name
        self.state_operations = state_operations

    def state_forwards(self, app_label, state):
        for operation in self.state_operations:
            operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        table = model._meta.db_table
        columns = [f.column for f in model._meta.local_concrete_fields]
        q = schema_editor.quote_name
        if schema_editor.connection.vendor == "postgresql":
            key = ", ".join(q(f.column) for f in model._meta.pk_fields)
            schema_editor.execute(f"ALTER TABLE {q(table)} DROP CONSTRAINT {q(table + '_pkey')}")
            schema_editor.execute(f"ALTER TABLE {q(table)} DROP CONSTRAINT {q(self.unique_name)}")
            schema_editor.execute(f"ALTER TABLE {q(table)} DROP COLUMN {q('id')}")
            schema_editor.execute(f"ALTER TABLE {q(table)} ADD PRIMARY KEY ({key})")
            return
        old = table + "__old"
        schema_editor.execute(f"ALTER TABLE {q(table)} RENAME TO {q(old)}")
        schema_editor.create_model(model)
        listed = ", ".join(q(c) for c in columns)
        schema_editor.execute(f"INSERT INTO {q(table)} ({listed}) SELECT {listed} FROM {q(old)}")
        schema_editor.execute(f"DROP TABLE {q(old)}")

    def describe(self):
        return f"Key {self.model_name} by its natural key"


def natural_key(model_name, unique_name, *fields):
    return NaturalKey(
        model_name,
        unique_name,
        [
            migrations.RemoveConstraint(model_name=model_name, name=unique_name),
            migrations.RemoveField(model_name=model_name, name="id"),
            migrations.AddField(
                model_name=model_name,
                name="pk",
                field=models.CompositePrimaryKey(
                    *fields, blank=True, editable=False, primary_key=True, serialize=False
                ),
            ),
        ],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0009_span_conventional_name"),
    ]

    operations = [
        natural_key("payload", "payload_unique_digest", "tenant", "digest"),
        natural_key("span", "span_unique_id", "tenant", "trace_id", "span_id"),
    ]
