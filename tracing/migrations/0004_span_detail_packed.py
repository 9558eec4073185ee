import orjson
from django.db import migrations, models


def pack_details(apps, schema_editor):
    """Existing details are kept as plain JSON bytes (readable without a dictionary)."""
    Span = apps.get_model("tracing", "Span")
    spans = Span._base_manager.only("id", "detail")
    batch = []
    for span in spans.iterator(chunk_size=2000):
        span.detail_packed = orjson.dumps(span.detail or {})
        batch.append(span)
        if len(batch) == 2000:
            Span._base_manager.bulk_update(batch, ["detail_packed"])
            batch = []
    Span._base_manager.bulk_update(batch, ["detail_packed"])


def unpack_details(apps, schema_editor):
    Span = apps.get_model("tracing", "Span")
    for span in Span._base_manager.only("id", "detail_packed").iterator(chunk_size=2000):
        data = bytes(span.detail_packed or b"")
        if data[:4] == b"\x28\xb5\x2f\xfd":
            raise RuntimeError("compressed span details cannot be migrated back")
        Span._base_manager.filter(id=span.id).update(detail=orjson.loads(data or b"{}"))


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0003_search_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="payloaddictionary",
            name="purpose",
            field=models.SmallIntegerField(
                choices=[(1, "Payload"), (2, "Span Detail")], default=1
            ),
        ),
        migrations.AddField(
            model_name="span",
            name="detail_packed",
            field=models.BinaryField(default=b""),
        ),
        migrations.RunPython(pack_details, unpack_details),
        migrations.RemoveField(
            model_name="span",
            name="detail",
        ),
    ]
