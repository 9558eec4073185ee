from datetime import date

from django.db import migrations

import tracing.models

EPOCH = date(1970, 1, 1).toordinal()


def copy_days(apps, schema_editor):
    """A new column and a copy: neither SQLite's table rebuild nor PostgreSQL's cast
    turns a date into its day number."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT last_seen FROM tracing_payload")
        for (day,) in cursor.fetchall():
            value = day if isinstance(day, date) else date.fromisoformat(str(day))
            cursor.execute(
                "UPDATE tracing_payload SET last_seen_day = %s WHERE last_seen = %s",
                [value.toordinal() - EPOCH, day],
            )


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0007_dictionary_serial"),
    ]

    operations = [
        migrations.AddField(
            model_name="payload",
            name="last_seen_day",
            field=tracing.models.DayField(null=True),
        ),
        migrations.RunPython(copy_days, migrations.RunPython.noop),
        migrations.RemoveField(model_name="payload", name="last_seen"),
        migrations.RenameField(model_name="payload", old_name="last_seen_day", new_name="last_seen"),
        migrations.AlterField(
            model_name="payload",
            name="last_seen",
            field=tracing.models.DayField(default=date.today),
        ),
    ]
