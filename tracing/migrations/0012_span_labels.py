"""Span labels (service, agent, operation, provider, models, tool) move from every span
row to one SpanLabels row per distinct combination; spans keep its id."""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

FIELDS = (
    "service_name", "agent_name", "operation", "provider", "request_model", "response_model",
    "tool_name",
)


def labels_from_columns(apps, schema_editor):
    from tracing.labels import label_key

    Span = apps.get_model("tracing", "Span")
    SpanLabels = apps.get_model("tracing", "SpanLabels")
    combinations = Span.all_tenants.values_list("tenant_id", *FIELDS).distinct()
    for tenant_id, *values in list(combinations):
        labels = SpanLabels.all_tenants.create(
            tenant_id=tenant_id, key=label_key(tuple(values)), **dict(zip(FIELDS, values))
        )
        Span.all_tenants.filter(tenant_id=tenant_id, **dict(zip(FIELDS, values))).update(
            labels_id=labels.id
        )


def columns_from_labels(apps, schema_editor):
    Span = apps.get_model("tracing", "Span")
    SpanLabels = apps.get_model("tracing", "SpanLabels")
    for labels in SpanLabels.all_tenants.all():
        Span.all_tenants.filter(labels_id=labels.id).update(
            **{field: getattr(labels, field) for field in FIELDS}
        )


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0003_ratebucket"),
        ("tracing", "0011_payload_span_list"),
    ]

    operations = [
        migrations.CreateModel(
            name="SpanLabels",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("key", models.BinaryField(max_length=16)),
                ("service_name", models.CharField(blank=True, max_length=255)),
                ("agent_name", models.CharField(blank=True, max_length=255)),
                ("operation", models.CharField(blank=True, max_length=64)),
                ("provider", models.CharField(blank=True, max_length=64)),
                ("request_model", models.CharField(blank=True, max_length=255)),
                ("response_model", models.CharField(blank=True, max_length=255)),
                ("tool_name", models.CharField(blank=True, max_length=255)),
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
                "verbose_name_plural": "span labels",
                "abstract": False,
                "default_manager_name": "all_tenants",
            },
            managers=[
                ("all_tenants", django.db.models.manager.Manager()),
            ],
        ),
        migrations.AddField(
            model_name="span",
            name="labels",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="tracing.spanlabels",
            ),
        ),
        migrations.AddConstraint(
            model_name="spanlabels",
            constraint=models.UniqueConstraint(
                fields=("tenant", "key"), name="spanlabels_unique_key"
            ),
        ),
        migrations.RunPython(labels_from_columns, columns_from_labels),
        migrations.RemoveField(
            model_name="span",
            name="agent_name",
        ),
        migrations.RemoveField(
            model_name="span",
            name="operation",
        ),
        migrations.RemoveField(
            model_name="span",
            name="provider",
        ),
        migrations.RemoveField(
            model_name="span",
            name="request_model",
        ),
        migrations.RemoveField(
            model_name="span",
            name="response_model",
        ),
        migrations.RemoveField(
            model_name="span",
            name="service_name",
        ),
        migrations.RemoveField(
            model_name="span",
            name="tool_name",
        ),
    ]
