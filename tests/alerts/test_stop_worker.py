"""A looping managed agent on the real worker, stopped by a loop rule with stop_run:
the worker's span path queues detection, detection asks the run to stop, and the
supervisor refuses the run's next gateway call."""

import pytest

from alerts.models import Alert, AlertRule
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services as execution_services
from execution.models import Run
from tests.execution.bundles import agent_with_bundle
from tests.workers import QUEUES, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]

LOOPER = """
import time

def main(ctx, input):
    for i in range(input["n"]):
        ctx.tool("echo", order=7)  # the same tool with the same arguments, over and over
        time.sleep(input["pause"])
    return "finished"
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n'
# The gateway's own guard stops a run after loop_repeats identical calls in a row; with
# the step limit below that, only the alert rule can stop this run with reason "loop".
LIMITS = {"max_steps": 90, "max_tool_calls": 90, "loop_repeats": 100, "wall_seconds": 120}


def test_a_loop_rule_stops_a_looping_managed_run_before_its_step_limit(
    acme, celery_worker, settings
):
    settings.EXECUTION_QUEUE = QUEUES["run"]
    agent = agent_with_bundle(acme, name="looper", code=LOOPER, manifest=MANIFEST)
    with tenant_scope(acme):
        AlertRule.objects.create(tenant=acme, detector="loop", threshold=3, stop_run=True)
        run = execution_services.run_create(
            tenant=acme, agent=agent, version=None, input={"n": 1000, "pause": 0.2},
            limits=LIMITS, actor=Actor.system(),
        )  # fmt: skip
    done = wait_for(
        lambda: (r := Run.all_tenants.get(pk=run.pk)).status not in ("queued", "running") and r,
        timeout=90,
        interval=0.25,
    )
    assert (done.status, done.stop_reason) == ("stopped", "loop"), done.error
    assert done.step_count < LIMITS["max_steps"]
    (alert,) = Alert.all_tenants.filter(tenant=acme, run_id=str(run.pk))
    assert alert.detector == "loop" and alert.trace_id == done.trace_id
    assert "echo called" in alert.summary
