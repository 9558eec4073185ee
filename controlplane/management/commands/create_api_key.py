from django.core.management.base import BaseCommand, CommandError

from controlplane import services
from controlplane.models import Scope, Tenant


class Command(BaseCommand):
    help = "Create an API key for a tenant; the key is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--scope", action="append", dest="scopes", choices=Scope.values, required=True
        )
        parser.add_argument("--name", default="cli key")

    def handle(self, *args, slug, scopes, name, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {slug!r}")
        key, raw = services.api_key_create(tenant=tenant, name=name, scopes=scopes)
        self.stdout.write(f"key {key.prefix}… for {tenant.slug}, scopes: {', '.join(key.scopes)}")
        self.stdout.write(raw)
