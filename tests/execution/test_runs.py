"""Runs end to end on a real Celery worker process (Redis broker, PostgreSQL)."""

import io
import os
import signal
import tarfile
from pathlib import Path

import httpx
import pytest

from controlplane.tenancy import tenant_scope
from execution import services
from execution.models import Run
from replay.models import JournalStep
from tests.execution.bundles import agent_with_bundle
from tests.execution.conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calculator"


def example_bundle() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("flightdeck.toml", "agent.py"):
            tar.add(EXAMPLE / name, arcname=name)
    return buf.getvalue()


def finished(api, key, run_id):
    def check():
        run = api.get(f"/api/v1/runs/{run_id}", key=key).json()
        return run if run["status"] in ("succeeded", "failed", "stopped") else None

    return check


def test_it_runs_the_example_agent_end_to_end_through_the_api(
    api, acme, make_key, worker, messages_api
):
    key = make_key(acme, "read", "write")
    agent = api.post("/api/v1/agents", key=key, json={"name": "calculator"}).json()
    version = api.post(
        f"/api/v1/agents/{agent['id']}/versions",
        key=key,
        files={"bundle": ("calculator.tar.gz", example_bundle())},
    )
    assert version.status_code == 201, version.text
    started = api.post(
        "/api/v1/runs",
        key=key,
        json={"agent": "calculator", "input": {"question": 'Use python {"code": "print(6 * 7)"}'}},
    )
    assert started.status_code == 202
    run = wait_for(finished(api, key, started.json()["id"]), timeout=60)
    assert run["status"] == "succeeded", run
    assert run["output"]["answer"] == "The tool returned: 42\n"
    assert run["output"]["runs_so_far"] == 1
    assert run["tool_call_count"] == 1 and run["input_tokens"] > 0
    assert len(run["trace_id"]) == 32
    steps = api.get(f"/api/v1/runs/{run['id']}/steps", key=key).json()
    assert run["step_count"] == len(steps) and [s["step"] for s in steps] == list(
        range(1, len(steps) + 1)
    )
    kinds = [s["kind"] for s in steps]
    assert kinds.count("llm.messages") == 2 and kinds.count("tool") == 1
    tool_step = steps[kinds.index("tool")]
    assert tool_step["result"]["output"] == "42\n" and tool_step["result"]["exit_code"] == 0
    assert messages_api.requests == 2
    # Its spans came through the span path, from the worker's process.
    from tracing.models import Span

    with tenant_scope(acme):
        spans = Span.objects.filter(run_id=str(run["id"]))
        assert sorted(spans.values_list("labels__operation", flat=True)) == [
            "chat",
            "chat",
            "execute_tool",
            "invoke_agent",
        ]
        assert {s.trace_id.hex for s in spans} == {run["trace_id"]}
    # The example remembers across runs (ctx.memory is per agent).
    again = api.post("/api/v1/runs", key=key, json={"agent": "calculator", "input": {}}).json()
    second = wait_for(finished(api, key, again["id"]), timeout=60)
    assert second["output"]["runs_so_far"] == 2


SLEEPER = """
import time

def main(ctx, input):
    first = ctx.random()
    reply = ctx.llm.messages(messages=[{"role": "user", "content": "hello"}], max_tokens=50)
    ctx.state["seen"] = first
    time.sleep(input["sleep"])
    return {"first": first, "state": ctx.state["seen"], "text": reply.content[0].text}
"""


@pytest.mark.slow
def test_it_takes_up_a_run_whose_worker_died_and_replays_its_journal(
    transactional_db, acme, worker, messages_api
):
    agent = agent_with_bundle(acme, name="sleeper", code=SLEEPER)
    with tenant_scope(acme):
        from controlplane.services import Actor

        run = services.run_create(
            tenant=acme,
            agent=agent,
            version=None,
            input={"sleep": 4},
            limits=None,
            actor=Actor.system(),
        )
    wait_for(lambda: Run.all_tenants.get(pk=run.pk).step_count >= 3, timeout=30)
    owner = Run.all_tenants.get(pk=run.pk).lease_owner
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool process running it
    # The prefork master hands the message back (reject_on_worker_lost) and the next
    # delivery takes the run at once: its owner is a process of this host that is gone.
    done = wait_for(
        lambda: (r := Run.all_tenants.get(pk=run.pk)).status in ("succeeded", "failed") and r,
        timeout=40,
    )
    assert done.status == "succeeded", (done.error, done.logs)
    assert done.attempts == 2 and done.lease_owner != owner
    steps = list(JournalStep.all_tenants.filter(run_id=run.pk).order_by("step"))
    # Steps 1-3 were served from the journal: the same random number, one LLM request.
    assert done.output["first"] == steps[0].result == done.output["state"]
    assert messages_api.requests == 1
    assert [s.kind for s in steps] == ["random", "llm.messages", "state.set", "state.get"]
    from replay.models import RunEvent

    events = RunEvent.all_tenants.filter(run_id=run.pk).values_list("kind", flat=True)
    assert list(events) == ["worker_lost", "resumed"]


def test_it_cancels_a_running_run(api, acme, make_key, worker):
    key = make_key(acme, "read", "write")
    agent_with_bundle(acme, name="sleeper", code=SLEEPER)
    run_id = api.post(
        "/api/v1/runs", key=key, json={"agent": "sleeper", "input": {"sleep": 30}}
    ).json()["id"]
    wait_for(
        lambda: api.get(f"/api/v1/runs/{run_id}", key=key).json()["step_count"] >= 3, timeout=30
    )
    response = api.post(f"/api/v1/runs/{run_id}/cancel", key=key)
    assert response.status_code == 202
    run = wait_for(finished(api, key, run_id), timeout=10)
    assert (run["status"], run["stop_reason"]) == ("stopped", "cancelled")


def test_it_does_nothing_on_a_second_delivery_of_a_finished_run(transactional_db, acme):
    from tests.execution.bundles import run_now

    agent = agent_with_bundle(acme, name="echo", code="def main(ctx, input):\n    return 1\n")
    run = run_now(acme, agent)
    assert run.status == "succeeded"
    with tenant_scope(acme):
        services.run_execute(run_id=run.pk, worker_id="another-worker")
    again = Run.all_tenants.get(pk=run.pk)
    assert (again.attempts, again.lease_owner, again.status) == (1, "test-worker", "succeeded")


def test_it_fails_a_run_that_keeps_losing_its_worker(transactional_db, acme, settings):
    from django.utils import timezone

    agent = agent_with_bundle(acme, name="echo", code="def main(ctx, input):\n    return 1\n")
    with tenant_scope(acme):
        from controlplane.services import Actor

        run = services.run_create(
            tenant=acme, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
    Run.all_tenants.filter(pk=run.pk).update(
        status="running", attempts=settings.EXECUTION_MAX_ATTEMPTS, lease_expires_at=timezone.now()
    )
    with tenant_scope(acme):
        services.run_execute(run_id=run.pk, worker_id="w")
    run.refresh_from_db()
    assert run.status == "failed" and "lost 3 times" in run.error


def test_it_serves_the_health_of_the_local_messages_api(messages_api):
    response = httpx.get(messages_api.url + "/_stats")
    assert response.status_code == 200 and "requests" in response.json()


def test_it_runs_a_run_through_the_task_body_in_this_process(transactional_db, acme):
    from execution.tasks import run_agent

    agent = agent_with_bundle(acme, name="echo", code="def main(ctx, input):\n    return input\n")
    with tenant_scope(acme):
        from controlplane.services import Actor

        run = services.run_create(
            tenant=acme, agent=agent, version=None, input=[1, 2], limits=None, actor=Actor.system()
        )
    run_agent(tenant_id=acme.id, run_id=run.pk)  # TenantTask scopes the body to acme
    run.refresh_from_db()
    assert (run.status, run.output, run.attempts) == ("succeeded", [1, 2], 1)
    run_agent(tenant_id=acme.id, run_id=run.pk)  # a second delivery does nothing
    assert Run.all_tenants.get(pk=run.pk).attempts == 1
