"""Workers scaled out: a worker SIGKILLed with runs under way loses none of them (the
other takes them up from their journals, no side effect twice), and a worker stopped with
SIGTERM hands its runs back at once instead of leaving their leases to run out."""

import random
import time

import pytest
from django.conf import settings as django_settings

from controlplane.loopback import wait_until
from execution import services
from execution.models import Run
from replay.models import JournalStep
from tests.platform.conftest import QUEUE, TEST_TIMEOUT
from tests.replay.conftest import Receiver
from tests.replay.test_resume import STEPS, effect_tool, owner_pid, start

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(TEST_TIMEOUT),
    pytest.mark.django_db(transaction=True),
]
EXPECTED = {"answers": [n * 10 for n in range(STEPS)], "done": STEPS - 1}


def start_receiver(tenant, settings) -> Receiver:
    """The side-effect-counting webhook (tests/replay), allowed for `tenant`, and runs
    sent to the platform tests' workers."""
    import threading

    from controlplane.services import Actor
    from controlplane.tenancy import tenant_scope

    settings.EXECUTION_QUEUE = QUEUE
    settings.EXECUTION_TOOL_QUEUE = QUEUE
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tenant_scope(tenant):
        services.allowed_host_add(
            tenant=tenant, host=f"127.0.0.1:{server.server_address[1]}", actor=Actor.system()
        )
    return server


@pytest.fixture
def receiver(acme, settings):
    server = start_receiver(acme, settings)
    yield server
    server.shutdown()


def holder(run_id: int, workers) -> int | None:
    """Which of `workers` runs the run now (its index), if any."""
    pid = owner_pid(run_id)
    for n, worker in enumerate(workers):
        if pid is not None and worker.popen.poll() is None and pid in worker.pids():
            return n
    return None


def finished(runs: list[Run], timeout: float) -> list[Run]:
    ids = [run.pk for run in runs]
    done = Run.all_tenants.filter(pk__in=ids, finished_at__isnull=False)
    deadline = time.monotonic() + timeout
    while done.count() < len(ids) and time.monotonic() < deadline:
        services.runs_requeue_lost()  # beat's job, once a lease period
        time.sleep(django_settings.EXECUTION_LEASE_SECONDS)
    return list(Run.all_tenants.filter(pk__in=ids).order_by("pk"))


def test_it_resumes_a_killed_workers_runs_on_the_other(acme, receiver, launch, settings):
    settings.EXECUTION_LEASE_SECONDS = 3  # as the workers' (process_env)
    agent = effect_tool(acme, receiver, name="effect", idempotent=True)
    workers = [launch.worker("w1", concurrency=3), launch.worker("w2", concurrency=3)]
    runs = [start(acme, agent, "effect") for _ in range(20)]
    # At a random moment once the first worker has a run part-way through its tools.
    steps = random.randint(1, 2 * STEPS - 1)
    wait_until(
        lambda: any(
            holder(run.pk, workers) == 0
            and JournalStep.all_tenants.filter(run_id=run.pk).count() >= steps
            for run in runs
        ),
        timeout=60,
        what="the first worker took no run",
    )
    on_killed = [run.pk for run in runs if holder(run.pk, workers) == 0]
    workers[0].kill()
    rows = finished(runs, timeout=100)
    print(f"\nSIGKILLed a worker holding {len(on_killed)} run(s), at {steps} journal rows")
    assert [r.status for r in rows] == ["succeeded"] * 20, [(r.pk, r.error) for r in rows]
    assert all(r.output == EXPECTED for r in rows)
    assert all(r.attempts >= 2 for r in rows if r.pk in on_killed)  # taken up again
    assert receiver.unkeyed == 0
    assert len(receiver.effects) == 20 * STEPS
    assert set(receiver.effects.values()) == {1}  # each side effect once


def test_it_hands_its_runs_back_when_stopped(acme, receiver, launch, settings):
    # A lease far longer than the test's patience: the run can only move on in time
    # if the stopping worker gives it back.
    lease = {"EXECUTION_LEASE_SECONDS": "120"}
    settings.EXECUTION_LEASE_SECONDS = 120
    receiver.delay = 0.5
    agent = effect_tool(acme, receiver, name="effect", idempotent=True)
    workers = [launch.worker("w1", **lease), launch.worker("w2", **lease)]
    run = start(acme, agent, "effect")
    wait_until(
        lambda: (
            holder(run.pk, workers) is not None
            and JournalStep.all_tenants.filter(run_id=run.pk).count() >= 2
        ),
        timeout=60,
        what="no worker took the run",
    )
    first = holder(run.pk, workers)
    workers[first].terminate()  # SIGTERM, as an orchestrator stops a pod
    wait_until(
        lambda: holder(run.pk, workers) == 1 - first,
        timeout=20,
        what="the other worker did not take the run up",
    )
    assert workers[first].popen.wait(timeout=30) == 0  # it stopped, as asked
    done = wait_until(
        lambda: (row := Run.all_tenants.get(pk=run.pk)).finished_at and row,
        timeout=60,
        what="the run did not finish",
    )
    assert done.status == "succeeded", done.error
    assert done.output == EXPECTED
    assert set(receiver.effects.values()) == {1}
    kinds = list(done.events.values_list("kind", flat=True).order_by("at"))
    assert kinds[:3] == ["requeued", "worker_lost", "resumed"]
