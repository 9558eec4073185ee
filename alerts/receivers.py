"""Registers detection as a step of the work that waits on newly stored spans
(tracing/followup.py), and listens to billing's budget events; neither waits for it."""

import logging
from functools import partial

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from billing.signals import budget_threshold_crossed
from tracing import followup

log = logging.getLogger(__name__)

followup.step_register(
    followup.SpanStep(
        task="alerts.tasks.detect_spans",
        queue=lambda: settings.ALERTS_QUEUE,
        enabled=lambda: settings.ALERTS_DETECT_ON_INGEST,
    )
)


def _enqueue(task, **kwargs) -> None:
    try:
        task.apply_async(kwargs=kwargs, queue=settings.ALERTS_QUEUE)
    except Exception as exc:  # noqa: BLE001 - the budget event is stored; do not fail its writer
        log.error("could not queue alert detection: %r", exc)


@receiver(budget_threshold_crossed, dispatch_uid="alerts.budget_crossed")
def budget_event(sender, *, tenant_id, **event):
    from alerts.tasks import budget_crossed

    event.pop("signal", None)
    transaction.on_commit(partial(_enqueue, budget_crossed, tenant_id=tenant_id, event=event))
