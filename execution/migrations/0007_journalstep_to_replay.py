# The journal is replay's now (replay/migrations/0003): forgotten here, its table kept.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('execution', '0006_journal_intents'),
        ('replay', '0003_journalstep'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='JournalStep')],
            database_operations=[],
        ),
    ]
