"""manage.py apply_retention [--tenant SLUG] [--as-of ISO8601]: the hourly retention
job by hand, as of a given time (to preview a policy's effect or catch up)."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.models import Tenant
from tracing.retention.job import tenants_apply


class Command(BaseCommand):
    help = "Move traces between tiers and delete expired ones, printing what was done"

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (its slug)")
        parser.add_argument("--as-of", help="act as of this time (ISO 8601), default now")

    def handle(self, *args, tenant=None, as_of=None, **options):
        when = None
        if as_of:
            when = parse_datetime(as_of)
            if when is None:
                raise CommandError(f"--as-of {as_of!r} is not an ISO 8601 date and time")
            if timezone.is_naive(when):
                when = timezone.make_aware(when, timezone.UTC)
        if tenant and not Tenant.objects.filter(slug=tenant).exists():
            raise CommandError(f"no tenant {tenant!r}")
        for row, report in tenants_apply(slug=tenant, as_of=when):
            for line in report.lines(row.slug):
                self.stdout.write(line)
