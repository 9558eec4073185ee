"""Registers costing as a step of the work that waits on newly stored spans
(tracing/followup.py), so ingest never waits for it."""

from django.conf import settings

from tracing import followup

followup.step_register(
    followup.SpanStep(
        task="billing.tasks.cost_spans",
        queue=lambda: settings.BILLING_QUEUE,
        enabled=lambda: settings.BILLING_COST_ON_INGEST,
    )
)
