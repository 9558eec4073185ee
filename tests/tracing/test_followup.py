"""The work waiting on newly stored spans: one message a batch for the steps sharing a
queue, run in turn by one worker run, a step's own task where it has its queue alone,
and a failed step tried again without the others."""

import pytest
from celery import shared_task
from django.db import OperationalError

from billing.models import SpanCost
from controlplane.tenancy import tenant_scope
from tests.billing.helpers import chat_attrs, one_call
from tests.tracing.searchdata import drain_queue, queue_name, queued_messages
from tracing import followup
from tracing.models import Span
from tracing.query.filters import TraceFilters
from tracing.query.traces import traces_filtered
from tracing.tasks import follow_up_spans, index_spans

pytestmark = pytest.mark.django_db


def _by_provider(tenant) -> list[str]:
    """The traces an attribute filter finds: indexing has run for them."""
    with tenant_scope(tenant):
        found = traces_filtered(TraceFilters(attrs=[("gen_ai.provider.name", "anthropic")]))
        return [t.trace_id.hex for t in found]


def _queued(queue: str) -> list[tuple[str, dict]]:
    """(task name, kwargs) of every message on the queue, taken off it."""
    found = []
    for message in queued_messages(queue):
        found.append((message.headers["task"], message.decode()[1]))
        message.ack()
    return found


@pytest.fixture
def shared_queue(settings):
    """Indexing, costing and detection routed to one queue of this test's own."""
    queue = queue_name()
    settings.SEARCH_INDEX_QUEUE = settings.BILLING_QUEUE = settings.ALERTS_QUEUE = queue
    settings.ALERTS_DETECT_ON_INGEST = True
    yield queue
    _queued(queue)  # leave nothing behind in the shared broker


def test_it_queues_one_message_a_batch_for_the_steps_sharing_a_queue(
    acme, shared_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        trace_hex = one_call(acme, attrs=chat_attrs())
    [(task, kwargs)] = _queued(shared_queue)
    assert task == "tracing.follow_up_spans"
    assert kwargs["steps"] == ["tracing.index_spans", "billing.cost_spans", "alerts.detect_spans"]
    assert [trace for trace, _ in kwargs["spans"]] == [trace_hex]

    assert _by_provider(acme) == []
    follow_up_spans(**kwargs)
    follow_up_spans(**kwargs)  # a redelivery changes nothing
    assert _by_provider(acme) == [trace_hex]
    with tenant_scope(acme):
        assert SpanCost.objects.filter(counted=True).count() == 1


def test_it_queues_a_steps_own_task_where_it_has_its_queue_alone(
    acme, shared_queue, settings, django_capture_on_commit_callbacks
):
    alone = queue_name()
    settings.SEARCH_INDEX_QUEUE = alone
    settings.BILLING_COST_ON_INGEST = False
    try:
        with django_capture_on_commit_callbacks(execute=True):
            one_call(acme, attrs=chat_attrs())
        assert drain_queue(alone, index_spans) == 1
    finally:
        _queued(alone)
    # Costing is off: detection is alone on the shared queue, in a message of its own.
    assert [task for task, _ in _queued(shared_queue)] == ["alerts.detect_spans"]


calls = []


@shared_task(name="tests.flaky_step", autoretry_for=(OperationalError,))
def flaky_step(*, tenant_id: int, spans: list) -> None:
    calls.append(len(spans))
    if len(calls) == 1:
        raise OperationalError("the database restarted")


@shared_task(name="tests.broken_step")
def broken_step(*, tenant_id: int, spans: list) -> None:
    raise ValueError("a bug")


def test_it_keeps_running_the_other_steps_when_one_fails(acme):
    calls.clear()
    trace_hex = one_call(acme, attrs=chat_attrs())  # no on-commit hooks: nothing queued
    with tenant_scope(acme):
        spans = [[s.trace_id.hex, s.span_id_hex] for s in Span.objects.all()]
    steps = ["tests.flaky_step", "tests.broken_step", "tracing.index_spans"]
    outcome = followup.steps_run(tenant_id=acme.id, spans=spans, steps=steps)
    # The transient failure is tried again alone; the bug is raised once the rest ran.
    assert outcome.transient == ["tests.flaky_step"]
    assert isinstance(outcome.error, ValueError)
    assert _by_provider(acme) == [trace_hex]
    again = followup.steps_run(tenant_id=acme.id, spans=spans, steps=outcome.transient)
    assert again.transient == [] and again.error is None
    assert calls == [1, 1]
