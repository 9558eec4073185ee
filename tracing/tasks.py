"""Celery entry points of the trace store (thin: the work is in tracing/search/index.py
and tracing/services.py)."""

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval

from controlplane.tasks import TenantTask, periodic_task
from tracing import followup, services
from tracing.search.index import search_index_spans


@shared_task(
    base=TenantTask,
    name="tracing.index_spans",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=300,
    time_limit=330,
    ignore_result=True,
)
def index_spans(*, tenant_id: int, spans: list) -> None:
    """Add newly stored spans to the search index. Safe to run twice."""
    search_index_spans(tenant_id=tenant_id, spans=[tuple(s) for s in spans])


@shared_task(
    base=TenantTask,
    name="tracing.follow_up_spans",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=5,
    soft_time_limit=300,
    time_limit=330,
    ignore_result=True,
)
def follow_up_spans(self, *, tenant_id: int, spans: list, steps: list[str]) -> None:
    """The follow-up steps of newly stored spans sharing a queue (tracing/followup.py).
    Safe to run twice, as each step is; a retry runs only the steps that failed."""
    outcome = followup.steps_run(tenant_id=tenant_id, spans=spans, steps=steps)
    if outcome.transient and self.request.retries < self.max_retries:
        countdown = get_exponential_backoff_interval(
            factor=1, retries=self.request.retries, maximum=600, full_jitter=True
        )
        kwargs = {"tenant_id": tenant_id, "spans": spans, "steps": outcome.transient}
        raise self.retry(kwargs=kwargs, countdown=countdown)
    if outcome.error is not None:
        raise outcome.error
    if outcome.transient:
        raise RuntimeError(f"{', '.join(outcome.transient)} still failing after retries")


@periodic_task(name="tracing.refresh_dictionaries_due")
def refresh_dictionaries_due() -> None:
    """Beat: queue a refresh for each tenant whose dictionaries are a week old."""
    for tenant_id in services.dictionaries_due():
        refresh_dictionaries.delay(tenant_id=tenant_id)


@periodic_task(name="tracing.metric_partitions", soft_time_limit=600, time_limit=660)
def metric_partitions() -> None:
    """Beat: the metric store's partitions made ahead, and its old days dropped."""
    from tracing.codingagents.metrics import metric_partitions_maintain

    metric_partitions_maintain()


@shared_task(
    base=TenantTask,
    name="tracing.refresh_dictionaries",
    acks_late=True,
    soft_time_limit=300,
    time_limit=330,
    ignore_result=True,
)
def refresh_dictionaries(*, tenant_id: int) -> None:
    """Train new dictionaries from recent traffic if they compress it clearly better.
    Safe to run twice: the second finds the new ones as good as itself."""
    services.dictionaries_refresh(tenant_id=tenant_id)


from tracing.retention.tasks import apply_retention, erasure_run  # noqa: E402, F401
