"""Agents built and runs executed in memory, for the tests and the execution benchmark
(which runs outside the test suite, so it must not import from tests/)."""

import io
import tarfile
import zipfile

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services


def make_bundle(files: dict[str, str | bytes], fmt: str = "tar.gz") -> bytes:
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return buf.getvalue()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def agent_with_bundle(tenant, *, name="agent", code: str, manifest: str = "", **files):
    """An agent of `tenant` whose version 1 runs `code` (agent.py, `def main(ctx, input)`)."""
    toml = manifest or 'entrypoint = "agent:main"\n'
    data = make_bundle({"flightdeck.toml": toml, "agent.py": code, **files})
    with tenant_scope(tenant):
        agent = services.agent_create(tenant=tenant, name=name, actor=Actor.system())
        services.agent_version_create(
            agent=agent, filename="b.tar.gz", data=data, actor=Actor.system()
        )
    return agent


def run_now(tenant, agent, *, input=None, limits=None):
    """Create a run and execute it in this process (the task's body, as the worker would)."""
    with tenant_scope(tenant):
        run = services.run_create(
            tenant=tenant,
            agent=agent,
            version=None,
            input=input,
            limits=limits,
            actor=Actor.system(),
        )
        services.run_execute(run_id=run.pk, worker_id="test-worker")
        run.refresh_from_db()
    return run
