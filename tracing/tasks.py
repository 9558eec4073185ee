"""Celery entry points of the trace store (thin: the work is in tracing/query/index.py)."""

from celery import shared_task

from controlplane.tasks import TenantTask
from tracing.query.index import search_index_spans


@shared_task(
    base=TenantTask, name="tracing.index_spans", acks_late=True, reject_on_worker_lost=True,
    autoretry_for=(OSError,), retry_backoff=True, max_retries=5, soft_time_limit=300,
    time_limit=330, ignore_result=True,
)  # fmt: skip
def index_spans(*, tenant_id: int, spans: list) -> None:
    """Add newly stored spans to the search index. Safe to run twice."""
    search_index_spans(tenant_id=tenant_id, spans=[tuple(s) for s in spans])
