"""Celery entry points of retention (thin: the work is in job.py and erasure.py).
Registered through tracing/tasks.py, which Celery's autodiscovery imports."""

from celery import shared_task

from controlplane.tasks import TenantTask, periodic_task
from tracing.retention import erasure, job


@periodic_task(name="tracing.apply_retention", soft_time_limit=3300, time_limit=3500)
def apply_retention() -> None:
    """Beat, hourly: every tenant's due moves and deletions, batch after batch."""
    for _tenant, _report in job.tenants_apply():
        pass


@shared_task(
    base=TenantTask,
    name="tracing.erasure_run",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3300,
    time_limit=3500,
    ignore_result=True,
)
def erasure_run(*, tenant_id: int, request_id: int) -> None:
    """Carry out an erasure request. Safe to run twice: a done request does nothing."""
    erasure.erasure_execute(tenant_id=tenant_id, request_id=request_id)
