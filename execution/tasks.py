"""Celery entry points of managed execution (thin: the work is in services)."""

from celery import shared_task

from controlplane.tasks import TenantTask, periodic_task
from execution import services


@shared_task(
    base=TenantTask,
    name="execution.run_agent",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # A delivery that finds the run under another worker's lease asks again when the
    # lease runs out (that worker may be dead); a few times, then beat's requeue.
    max_retries=3,
    # No Celery time limit: the supervisor enforces the run's own wall time and a
    # hard kill here would leave the sandbox's lease to expire instead.
)
def run_agent(self, *, tenant_id: int, run_id: int) -> None:
    wait = services.run_execute(run_id=run_id)
    if wait is not None and self.request.retries < self.max_retries and not self.request.is_eager:
        raise self.retry(countdown=wait)


@shared_task(
    base=TenantTask,
    name="execution.tool_call",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=300,
    time_limit=330,
)
def tool_call(*, tenant_id: int, tool_call_id: int) -> None:
    services.tool_call_execute(tool_call_id=tool_call_id)


@periodic_task(name="execution.requeue_lost_runs")
def requeue_lost_runs() -> None:
    services.runs_requeue_lost()
