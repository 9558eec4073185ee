"""Listens to the span path and queues costing, so ingest never waits for it."""

import logging
from functools import partial

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from tracing.signals import spans_ingested

log = logging.getLogger(__name__)
CHUNK = 500  # spans per task, as for search indexing


def _enqueue(*, tenant_id: int, spans: list, queue: str | None) -> None:
    from billing.tasks import cost_spans

    try:
        cost_spans.apply_async(kwargs={"tenant_id": tenant_id, "spans": spans}, queue=queue)
    except Exception as exc:  # noqa: BLE001 - the spans are stored; do not fail the export
        log.error("could not queue costing for %d spans: %r", len(spans), exc)


@receiver(spans_ingested, dispatch_uid="billing.cost_spans")
def cost_ingested_spans(sender, *, tenant_id, spans, **kwargs):
    if not settings.BILLING_COST_ON_INGEST:
        return
    queue = settings.BILLING_QUEUE  # None: Celery's default queue
    for start in range(0, len(spans), CHUNK):
        chunk = [list(pair) for pair in spans[start : start + CHUNK]]
        transaction.on_commit(partial(_enqueue, tenant_id=tenant_id, spans=chunk, queue=queue))
