"""The price book of billing/prices/2026-12.json as the next version: it prices
claude-sonnet-5, the platform's default model, which the 2025-11 book predates."""

from django.db import migrations

from billing.migrations._seedbook import seed_book


def seed(apps, schema_editor):
    seed_book(apps, "2026-12.json")


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_budget_default_thresholds")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
