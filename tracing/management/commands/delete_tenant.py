"""manage.py delete_tenant SLUG --yes: a tenant and everything it stored, every tier
and the blob store included; prints the record of what was removed."""

from django.core.management.base import BaseCommand, CommandError

from controlplane.models import Tenant
from tracing.retention.erasure import tenant_erase


class Command(BaseCommand):
    help = "Delete a tenant and all its data (database, blob store, search index)"

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--yes", action="store_true", help="really delete")

    def handle(self, *args, slug, yes=False, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {slug!r}")
        if not yes:
            raise CommandError("this deletes everything of the tenant: add --yes")
        record = tenant_erase(tenant=tenant)
        self.stdout.write(f"{slug}: removed {record.counts}")
