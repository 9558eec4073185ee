from django.db import migrations, models


def number_dictionaries(apps, schema_editor):
    PayloadDictionary = apps.get_model("tracing", "PayloadDictionary")
    serials: dict[int, int] = {}
    for row in PayloadDictionary._base_manager.order_by("tenant_id", "created_at", "id"):
        serials[row.tenant_id] = serials.get(row.tenant_id, 0) + 1
        row.serial = serials[row.tenant_id]
        row.save(update_fields=["serial"])


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0006_payload_digest_bytes"),
    ]

    operations = [
        migrations.AddField(
            model_name="payloaddictionary",
            name="serial",
            field=models.SmallIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.RunPython(number_dictionaries, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="payloaddictionary",
            constraint=models.UniqueConstraint(
                fields=("tenant", "serial"), name="payload_dictionary_serial"
            ),
        ),
    ]
