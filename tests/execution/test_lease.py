"""The run's lease is kept by a thread of its own: a supervisor busy for longer than the
lease (a slow unpack, a slow sandbox start, a long flush) keeps its run."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.models import Run
from execution.runner import LeaseKeeper
from tests.execution.bundles import agent_with_bundle
from tests.execution.conftest import wait_for

pytestmark = [pytest.mark.postgres]


def claimed_run(tenant, worker_id: str, *, name: str = "echo") -> Run:
    agent = agent_with_bundle(tenant, name=name, code="def main(ctx, input):\n    return 1\n")
    with tenant_scope(tenant):
        run = services.run_create(
            tenant=tenant, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        return services.run_claim(run_id=run.pk, worker_id=worker_id)


def test_it_keeps_the_lease_while_the_supervisor_is_busy(transactional_db, acme, settings):
    settings.EXECUTION_LEASE_SECONDS = 3
    run = claimed_run(acme, "w1")
    keeper = LeaseKeeper(run=run, worker_id="w1").start()
    try:
        time.sleep(settings.EXECUTION_LEASE_SECONDS + 1)  # this thread busy past the lease
        with tenant_scope(acme):
            assert services.run_claim(run_id=run.pk, worker_id="w2") is None
    finally:
        keeper.stop()
    assert keeper.state == "ok"
    assert Run.all_tenants.get(pk=run.pk).lease_owner == "w1"


def test_it_reports_the_lease_lost_once_another_worker_has_the_run(
    transactional_db, acme, settings
):
    run = claimed_run(acme, "w1")
    keeper = LeaseKeeper(run=run, worker_id="w1").start()
    try:
        Run.all_tenants.filter(pk=run.pk).update(lease_owner="w2")
        assert wait_for(lambda: keeper.state == "lost", timeout=10)
    finally:
        keeper.stop()


def test_it_passes_on_a_cancel_found_at_a_renewal(transactional_db, acme):
    run = claimed_run(acme, "w1")
    keeper = LeaseKeeper(run=run, worker_id="w1").start()
    try:
        Run.all_tenants.filter(pk=run.pk).update(cancel_requested=True)
        assert wait_for(lambda: keeper.state == "cancelled", timeout=10)
    finally:
        keeper.stop()


def test_it_takes_a_run_at_once_from_a_killed_process_not_reaped_yet(transactional_db, acme):
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    stat = Path(f"/proc/{child.pid}/stat")
    wait_for(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z")
    dead = f"{socket.gethostname()}:{child.pid}"
    os.kill(child.pid, 0)  # signal 0 still reaches it: it exited, but is not reaped
    run = claimed_run(acme, dead)
    alive = claimed_run(acme, f"{socket.gethostname()}:{os.getpid()}", name="alive")
    with tenant_scope(acme):
        assert services.run_claim(run_id=run.pk, worker_id="w2") is not None  # no lease wait
        assert services.run_claim(run_id=alive.pk, worker_id="w2") is None  # its owner lives
    child.wait()
