from django.core.management.base import BaseCommand, CommandError

from controlplane import services
from controlplane.models import Role, Scope


class Command(BaseCommand):
    help = "Create a tenant (and optionally its owner) with a first API key, printed last."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--owner", metavar="EMAIL", help="owner's e-mail; created if new")

    def handle(self, *args, slug, name, owner, **options):
        try:
            tenant = services.tenant_create(slug=slug, name=name)
        except services.ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"tenant: {tenant.slug} (id {tenant.pk})")
        if owner:
            user, password = services.user_get_or_create(email=owner)
            services.membership_add(tenant=tenant, user=user, role=Role.OWNER)
            self.stdout.write(f"owner: {owner}")
            if password:
                self.stdout.write(f"password: {password}")
        _, raw = services.api_key_create(
            tenant=tenant, name="first key", scopes=[Scope.INGEST, Scope.READ]
        )
        self.stdout.write(raw)
