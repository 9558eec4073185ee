"""The seed price book (billing/prices/2025-11.json) as version 1."""

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.db import migrations

SEED = Path(__file__).resolve().parent.parent / "prices" / "2025-11.json"
PRICES = ("input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok",
          "cache_write_usd_per_mtok")


def seed(apps, schema_editor):
    PriceBook = apps.get_model("billing", "PriceBook")
    PriceEntry = apps.get_model("billing", "PriceEntry")
    if PriceBook.objects.exists():
        return
    data = json.loads(SEED.read_text())
    book = PriceBook.objects.create(
        version=1, source=data["source"],
        **{k: Decimal(v) for k, v in data["platform"].items()},
    )
    PriceEntry.objects.bulk_create(
        [
            PriceEntry(
                book=book, provider=m["provider"], model=m["model"], aliases=m["aliases"],
                effective_from=date.fromisoformat(m["effective_from"]),
                input_includes_cache=m.get("input_includes_cache", False),
                **{k: Decimal(m[k]) for k in PRICES},
            )
            for m in data["models"]
        ]
    )


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
