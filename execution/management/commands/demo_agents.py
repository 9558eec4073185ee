"""Registers the example agents of examples/ for the demo tenant and queues one run of
each (part of `make run`), so a newcomer finds a finished run and its trace."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.models import Tenant
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.bundles import MANIFEST
from execution.models import Agent, AgentVersion

EXAMPLES = settings.BASE_DIR / "examples"
DEMO_INPUT = {"question": 'What is 6 * 7? Use python {"code": "print(6 * 7)"}'}


def bundle_of(folder: Path) -> bytes:
    buf = io.BytesIO()
    # Fixed metadata, so the same files give the same bytes (and the same content address).
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(
            p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ):
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Command(BaseCommand):
    help = "Register examples/* as agents of the demo tenant and queue one run of each."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", default="demo")
        parser.add_argument("--no-run", action="store_true")

    def handle(self, *args, tenant, no_run, **options):
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"no tenant {tenant!r} (run `manage.py demo_setup` first)")
        base = f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
        with tenant_scope(found):
            for folder in sorted(p for p in EXAMPLES.iterdir() if (p / MANIFEST).is_file()):
                agent = Agent.objects.filter(name=folder.name).first() or services.agent_create(
                    tenant=found, name=folder.name, actor=Actor.system()
                )
                data = bundle_of(folder)
                latest = AgentVersion.objects.filter(agent=agent).order_by("-version").first()
                if latest is None or latest.bundle_sha256 != hashlib.sha256(data).hexdigest():
                    latest = services.agent_version_create(
                        agent=agent,
                        filename=f"{folder.name}.tar.gz",
                        data=data,
                        actor=Actor.system(),
                    )
                self.stdout.write(f"Example agent {agent.name!r} is version {latest.version}.")
                if no_run:
                    continue
                run = services.run_create(
                    tenant=found,
                    agent=agent,
                    version=None,
                    input=DEMO_INPUT,
                    limits=None,
                    actor=Actor.system(),
                )
                self.stdout.write(
                    f"Queued example run {run.pk}; once the worker is up: "
                    f"curl -H 'Authorization: Bearer <api key>' {base}/api/v1/runs/{run.pk}\n"
                    f"  its steps: {base}/api/v1/runs/{run.pk}/steps; in the console (log in as "
                    f"the demo owner): {base}/t/{found.slug}/runs/{run.pk}/"
                )
