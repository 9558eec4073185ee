# The journal's table takes its app's name; a rename keeps every row.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('execution', '0007_journalstep_to_replay'),
        ('replay', '0003_journalstep'),
    ]

    operations = [
        migrations.AlterModelTable(name='journalstep', table=None),
    ]
