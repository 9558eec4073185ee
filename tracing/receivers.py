"""Listens to the span path and queues the work that waits on newly stored spans
(tracing/followup.py), so ingest never waits for it; registers search indexing as the
first of those steps."""

from functools import partial

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from tracing import followup
from tracing.signals import spans_ingested

# Spans per message: the OpenTelemetry SDK's batch span processor exports up to 512
# spans a request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE), so a full export is one message,
# not a 500 and a 12 that pay every step's fixed queries again; and each run stays well
# under its time limit.
CHUNK = 512

followup.step_register(
    # Tests give each run a queue of its own, so the setting is read on each batch.
    followup.SpanStep(task="tracing.tasks.index_spans", queue=lambda: settings.SEARCH_INDEX_QUEUE)
)


@receiver(spans_ingested, dispatch_uid="tracing.follow_up_spans")
def follow_up_ingested_spans(sender, *, tenant_id, spans, **kwargs):
    queues = followup.steps_by_queue()
    for start in range(0, len(spans), CHUNK):
        chunk = [list(pair) for pair in spans[start : start + CHUNK]]
        for queue, steps in queues.items():
            # Same as delay_on_commit (the signal comes after the spans' commit, so this
            # runs at once), with the queue named and a broker error logged.
            transaction.on_commit(
                partial(
                    followup.steps_enqueue,
                    tenant_id=tenant_id,
                    spans=chunk,
                    queue=queue,
                    steps=steps,
                )
            )
