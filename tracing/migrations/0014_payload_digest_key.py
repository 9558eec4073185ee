"""Payloads keyed by their digest alone, in a table rebuilt in alignment order.

The digest is keyed per tenant, so it identifies a payload without the tenant id: the
primary key's entries shrink from 40 to 24 bytes (a uuid on PostgreSQL). `size` goes
(nothing read it; a frame records its content size). The table is rebuilt rather than
altered because PostgreSQL keeps dropped columns in every row's null bitmap, and with
more than eight columns a row with a NULL needs a 32-byte header instead of 24.
"""

import datetime

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

from tracing.models import DayField, DigestField

KINDS = [(1, "Value"), (2, "Message"), (3, "List"), (4, "Resource"), (5, "Span List")]


class Rebuild(migrations.operations.base.Operation):
    """Create the table anew from the model's new state and copy the rows over."""

    reversible = False

    def __init__(self, model_name, state_operations):
        self.model_name = model_name
        self.state_operations = state_operations

    def state_forwards(self, app_label, state):
        for operation in self.state_operations:
            operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        table, old = model._meta.db_table, model._meta.db_table + "__old"
        q = schema_editor.quote_name
        postgres = schema_editor.connection.vendor == "postgresql"
        schema_editor.execute(f"ALTER TABLE {q(table)} RENAME TO {q(old)}")
        if postgres:  # the key's index name would clash with the new table's
            schema_editor.execute(
                f"ALTER TABLE {q(old)} RENAME CONSTRAINT {q(table + '_pkey')} TO {q(old + '_pkey')}"
            )
        schema_editor.create_model(model)
        columns, values = [], []
        for field in model._meta.local_concrete_fields:
            columns.append(q(field.column))
            if postgres and isinstance(field, DigestField):
                values.append(f"encode({q(field.column)}, 'hex')::uuid")
            else:
                values.append(q(field.column))
        schema_editor.execute(
            f"INSERT INTO {q(table)} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {q(old)}"
        )
        schema_editor.execute(f"DROP TABLE {q(old)}")

    def describe(self):
        return f"Rebuild {self.model_name}"


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0013_dictionary_checked_at"),
    ]

    operations = [
        Rebuild(
            "payload",
            # The model anew, so that its columns are created in this order.
            [
                migrations.DeleteModel(name="Payload"),
                migrations.CreateModel(
                    name="Payload",
                    fields=[
                        ("digest", DigestField(primary_key=True, serialize=False)),
                        (
                            "tenant",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                to="controlplane.tenant",
                            ),
                        ),
                        ("last_seen", DayField(default=datetime.date.today)),
                        ("kind", models.SmallIntegerField(choices=KINDS)),
                        ("data", models.BinaryField(blank=True, null=True)),
                        ("redactions", models.JSONField(blank=True, null=True)),
                    ],
                    options={"abstract": False, "default_manager_name": "all_tenants"},
                    managers=[("all_tenants", django.db.models.manager.Manager())],
                ),
            ],
        ),
    ]
