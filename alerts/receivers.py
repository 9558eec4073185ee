"""Listens to the span path and to billing's budget events and queues detection, so
neither waits for it."""

import logging
from functools import partial

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from billing.signals import budget_threshold_crossed
from tracing.signals import spans_ingested

log = logging.getLogger(__name__)
# Spans per task: the OpenTelemetry SDK's batch span processor exports up to 512 spans
# a request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE), so a full export is one task, not a
# 500 and a 12 that pays every fixed query of a batch again.
CHUNK = 512


def _enqueue(task, **kwargs) -> None:
    try:
        task.apply_async(kwargs=kwargs, queue=settings.ALERTS_QUEUE)
    except Exception as exc:  # noqa: BLE001 - the spans are stored; do not fail the export
        log.error("could not queue alert detection: %r", exc)


@receiver(spans_ingested, dispatch_uid="alerts.detect_spans")
def detect_ingested_spans(sender, *, tenant_id, spans, **kwargs):
    from alerts.tasks import detect_spans

    if not settings.ALERTS_DETECT_ON_INGEST:
        return
    for start in range(0, len(spans), CHUNK):
        chunk = [list(pair) for pair in spans[start : start + CHUNK]]
        transaction.on_commit(partial(_enqueue, detect_spans, tenant_id=tenant_id, spans=chunk))


@receiver(budget_threshold_crossed, dispatch_uid="alerts.budget_crossed")
def budget_event(sender, *, tenant_id, **event):
    from alerts.tasks import budget_crossed

    event.pop("signal", None)
    transaction.on_commit(partial(_enqueue, budget_crossed, tenant_id=tenant_id, event=event))
