"""Celery entry points of billing (thin: the work is in billing/costs.py)."""

from billing import costs
from controlplane.tasks import span_batch_task


@span_batch_task(name="billing.cost_spans")
def cost_spans(*, tenant_id: int, spans: list) -> None:
    """Cost newly stored spans and add them to the roll-ups. Safe to run twice."""
    costs.spans_cost(tenant_id=tenant_id, spans=[tuple(s) for s in spans])
