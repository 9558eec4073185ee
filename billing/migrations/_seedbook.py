"""Loading a seed price book file in a migration (historical models, no services), shared
by the migrations that add one."""

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from django.db.models import Max

PRICES_DIR = Path(__file__).resolve().parent.parent / "prices"
PRICES = ("input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok",
          "cache_write_usd_per_mtok")  # fmt: skip


def seed_book(apps, name: str, *, only_if_empty: bool = False) -> None:
    """billing/prices/<name> as the book's next version, unless a book from the same
    source is loaded already (or, with only_if_empty, any book is)."""
    PriceBook = apps.get_model("billing", "PriceBook")
    PriceEntry = apps.get_model("billing", "PriceEntry")
    data = json.loads((PRICES_DIR / name).read_text())
    books = PriceBook.objects.all()
    if (only_if_empty and books.exists()) or books.filter(source=data["source"]).exists():
        return
    book = PriceBook.objects.create(
        version=(books.aggregate(m=Max("version"))["m"] or 0) + 1,
        source=data["source"],
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
    )  # fmt: skip
