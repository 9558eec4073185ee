"""Celery entry points of billing (thin: the work is in billing/costs.py)."""

from celery import shared_task
from django.db import OperationalError

from billing import costs
from controlplane.tasks import TenantTask


@shared_task(
    base=TenantTask,
    name="billing.cost_spans",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=300,
    time_limit=330,
    ignore_result=True,
)
def cost_spans(*, tenant_id: int, spans: list) -> None:
    """Cost newly stored spans and add them to the roll-ups. Safe to run twice."""
    costs.spans_cost(tenant_id=tenant_id, spans=[tuple(s) for s in spans])
