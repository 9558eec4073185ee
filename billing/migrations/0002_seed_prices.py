"""The seed price book (billing/prices/2025-11.json) as version 1."""

from django.db import migrations

from billing.migrations._seedbook import seed_book


def seed(apps, schema_editor):
    seed_book(apps, "2025-11.json", only_if_empty=True)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
