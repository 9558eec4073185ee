"""Creates the demo tenant once and prints how to use it (part of `make run`)."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from controlplane import services
from controlplane.models import Role, Scope, Tenant

DEMO_SLUG = "demo"
DEMO_OWNER = "demo@flightdeck.local"


class Command(BaseCommand):
    help = "Create the demo tenant, owner and ingest key on first run; print them."

    def handle(self, *args, **options):
        creds = settings.VAR_DIR / "demo-credentials.txt"
        if not Tenant.objects.filter(slug=DEMO_SLUG).exists():
            tenant = services.tenant_create(slug=DEMO_SLUG, name="Demo")
            user, password = services.user_get_or_create(email=DEMO_OWNER)
            password_line = password or "(unchanged: the user existed already)"
            # An ordinary owner, who sees the demo tenant only: Django's admin is for
            # platform staff (`manage.py create_staff EMAIL`).
            services.membership_add(tenant=tenant, user=user, role=Role.OWNER)
            _, key = services.api_key_create(
                tenant=tenant,
                name="demo key",
                scopes=[Scope.INGEST, Scope.READ, Scope.WRITE],
            )
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            # The key is stored hashed; this local file is the only copy, kept for the demo.
            creds.write_text(f"login: {DEMO_OWNER}\npassword: {password_line}\napi key: {key}\n")
            os.chmod(creds, 0o600)
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        self.stdout.write(
            f"\nFlightdeck is starting: the console is http://{host}:{port}/t/{DEMO_SLUG}/"
        )
        if creds.exists():
            self.stdout.write(creds.read_text())
        self.stdout.write(
            f"Try: curl -H 'Authorization: Bearer <api key>' http://{host}:{port}/api/v1/tenant\n"
        )
