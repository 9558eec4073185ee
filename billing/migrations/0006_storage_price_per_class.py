"""Storage gets a price per place: the database's rows and each S3 storage class (a
cold bundle costs less to keep than STANDARD). Books loaded before keep charging their
one price everywhere; billing/prices/2026-12-02.json, with AWS's per-class prices, is
loaded as the next version."""

from django.db import migrations, models

from billing.migrations._seedbook import seed_book

PRICE = {"decimal_places": 6, "default": 0, "max_digits": 14}
NEW = (
    "storage_database_gb_month_usd",
    "storage_standard_ia_gb_month_usd",
    "storage_glacier_ir_gb_month_usd",
)


def one_price_everywhere(apps, schema_editor):
    PriceBook = apps.get_model("billing", "PriceBook")
    for book in PriceBook.objects.all():
        for name in NEW:
            setattr(book, name, book.storage_standard_gb_month_usd)
        book.save(update_fields=NEW)


def seed(apps, schema_editor):
    seed_book(apps, "2026-12-02.json")


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_spancost_indexes")]
    operations = [
        migrations.RenameField("pricebook", "storage_gb_month_usd", "storage_standard_gb_month_usd"),
        *(migrations.AddField("pricebook", name, models.DecimalField(**PRICE)) for name in NEW),
        migrations.RunPython(one_price_everywhere, migrations.RunPython.noop),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
