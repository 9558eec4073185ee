"""Celery entry points of alerts (thin: the work is in detect.py and services.py)."""

from celery import shared_task
from django.db import OperationalError

from alerts import detect, services, stuck
from alerts.delivery import DeliveryFailed
from controlplane.tasks import TenantTask, periodic_task, span_batch_task


@span_batch_task(name="alerts.detect_spans")
def detect_spans(*, tenant_id: int, spans: list) -> None:
    """Run the tenant's detectors over newly stored spans. Safe to run twice."""
    detect.spans_detect(tenant_id=tenant_id, spans=[tuple(s) for s in spans])


@shared_task(
    base=TenantTask,
    name="alerts.budget_crossed",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    ignore_result=True,
)
def budget_crossed(*, tenant_id: int, event: dict) -> None:
    detect.budget_detect(tenant_id=tenant_id, event=event)


@shared_task(
    base=TenantTask,
    name="alerts.deliver",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DeliveryFailed, OperationalError),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=False,
    max_retries=8,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def alert_deliver(self, *, tenant_id: int, alert_id: int | None, endpoint_id: int, test_id=""):
    """Deliver one alert to one endpoint; retried with backoff until it is taken."""
    services.delivery_attempt(
        alert_id=alert_id, endpoint_id=endpoint_id, attempt=self.request.retries + 1,
        test_id=test_id,
    )  # fmt: skip


@periodic_task(name="alerts.stuck_runs", soft_time_limit=60, time_limit=90)
def stuck_runs() -> None:
    """Beat: managed runs with no step for longer than a stuck_run rule allows."""
    stuck.runs_stuck_detect()


@periodic_task(name="alerts.prune_state", soft_time_limit=300, time_limit=330)
def prune_state() -> None:
    """Beat: delete detection state no batch will read again, so it stays bounded."""
    services.detection_state_prune()
