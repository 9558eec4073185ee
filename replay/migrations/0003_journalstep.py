# The journal moves from execution to replay: its table stays where it is (state only
# here), then takes replay's name (0004), so every row survives the move.

import django.db.models.deletion
import django.db.models.manager
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('controlplane', '0003_ratebucket'),
        ('execution', '0006_journal_intents'),
        ('replay', '0002_run_link'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='JournalStep',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('step', models.PositiveIntegerField()),
                        ('kind', models.CharField(max_length=32)),
                        ('request_hash', models.CharField(max_length=64)),
                        ('occurrence', models.PositiveIntegerField(default=1)),
                        ('thread', models.CharField(default='main', max_length=64)),
                        ('thread_seq', models.PositiveIntegerField(default=0)),
                        ('request', models.JSONField(null=True)),
                        ('result', models.JSONField(null=True)),
                        ('done', models.BooleanField(default=True)),
                        ('is_error', models.BooleanField(default=False)),
                        ('duration_ms', models.FloatField(default=0)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='execution.run')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to='controlplane.tenant')),
                    ],
                    options={
                        'abstract': False,
                        'default_manager_name': 'all_tenants',
                        'db_table': 'execution_journalstep',
                    },
                    managers=[
                        ('all_tenants', django.db.models.manager.Manager()),
                    ],
                ),
                migrations.AddConstraint(
                    model_name='journalstep',
                    constraint=models.UniqueConstraint(fields=('run', 'step'), name='journal_step_unique'),
                ),
                migrations.AddConstraint(
                    model_name='journalstep',
                    constraint=models.UniqueConstraint(fields=('run', 'request_hash', 'occurrence'), name='journal_step_identity'),
                ),
            ],
            database_operations=[],
        ),
    ]
