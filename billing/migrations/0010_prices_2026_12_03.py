"""The price book of billing/prices/2026-12-03.json as the next version: it prices the
Anthropic models released since the last book (Opus 4.6 to 5, Sonnet 4.6, Fable 5 and
5.1, Mythos 5), which were cost_unknown until now."""

from django.db import migrations

from billing.migrations._seedbook import seed_book


def seed(apps, schema_editor):
    seed_book(apps, "2026-12-03.json")


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_budget_holds")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
