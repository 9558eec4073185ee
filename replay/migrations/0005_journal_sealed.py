# The journal's requests and results are sealed with the tenant's journal key
# (replay/sealing.py): new binary columns, the rows' values sealed into them, then they
# take the old columns' names.

from django.db import migrations

import replay.sealing


def seal_rows(apps, schema_editor):
    JournalStep = apps.get_model("replay", "JournalStep")
    rows = JournalStep.all_tenants.only("id", "tenant_id", "request", "result").order_by("id")
    batch = []
    for row in rows.iterator(chunk_size=500):
        row.request_sealed = replay.sealing.seal(tenant_id=row.tenant_id, value=row.request)
        row.result_sealed = replay.sealing.seal(tenant_id=row.tenant_id, value=row.result)
        batch.append(row)
        if len(batch) == 500:
            JournalStep.all_tenants.bulk_update(batch, ["request_sealed", "result_sealed"])
            batch = []
    JournalStep.all_tenants.bulk_update(batch, ["request_sealed", "result_sealed"])


def open_rows(apps, schema_editor):
    JournalStep = apps.get_model("replay", "JournalStep")
    rows = JournalStep.all_tenants.only("id", "request_sealed", "result_sealed").order_by("id")
    batch = []
    for row in rows.iterator(chunk_size=500):
        # The sealed fields read back opened: the JSON columns take the values.
        row.request, row.result = row.request_sealed, row.result_sealed
        batch.append(row)
        if len(batch) == 500:
            JournalStep.all_tenants.bulk_update(batch, ["request", "result"])
            batch = []
    JournalStep.all_tenants.bulk_update(batch, ["request", "result"])


class Migration(migrations.Migration):

    dependencies = [
        ('replay', '0004_journalstep_table'),
    ]

    operations = [
        migrations.AddField(
            model_name='journalstep',
            name='request_sealed',
            field=replay.sealing.SealedJSONField(null=True),
        ),
        migrations.AddField(
            model_name='journalstep',
            name='result_sealed',
            field=replay.sealing.SealedJSONField(null=True),
        ),
        migrations.RunPython(seal_rows, open_rows),
        migrations.RemoveField(model_name='journalstep', name='request'),
        migrations.RemoveField(model_name='journalstep', name='result'),
        migrations.RenameField(model_name='journalstep', old_name='request_sealed', new_name='request'),
        migrations.RenameField(model_name='journalstep', old_name='result_sealed', new_name='result'),
    ]
