"""Listens to the span path and queues search indexing, so ingest never waits for it."""

import logging
from functools import partial

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from tracing.signals import spans_ingested

log = logging.getLogger(__name__)
# Spans per task: keeps each message small and each run well under its time limit.
CHUNK = 500


def _enqueue(*, tenant_id: int, spans: list, queue: str | None) -> None:
    from tracing.tasks import index_spans

    try:
        index_spans.apply_async(kwargs={"tenant_id": tenant_id, "spans": spans}, queue=queue)
    except Exception as exc:  # noqa: BLE001 - the spans are stored; do not fail the export
        # A broker outage must not turn a stored batch into an error the exporter
        # retries; `manage.py index_traces` rebuilds what was missed.
        log.error("could not queue search indexing for %d spans: %r", len(spans), exc)


@receiver(spans_ingested, dispatch_uid="tracing.index_spans")
def index_ingested_spans(sender, *, tenant_id, spans, **kwargs):
    queue = settings.SEARCH_INDEX_QUEUE  # tests give each run a queue of its own
    for start in range(0, len(spans), CHUNK):
        chunk = [list(pair) for pair in spans[start : start + CHUNK]]
        # Same as index_spans.delay_on_commit (the signal comes after the spans' commit,
        # so this runs at once), with the queue named and a broker error logged.
        transaction.on_commit(partial(_enqueue, tenant_id=tenant_id, spans=chunk, queue=queue))
