"""The work that waits on newly stored spans (search indexing, costing, alert
detection), queued after their commit as one message per request and queue.

Each kind of work is a step: a Celery task of its own, registered here by its app (billing
and alerts register theirs; the span path knows neither). Steps whose settings name the
same queue share one message of `tracing.follow_up_spans`, which runs them in turn in
one worker process: the web publishes one message a batch instead of three (0.55-0.8 ms
of its CPU against 1.7-2.3 ms for the three, measured in one process, interleaved, at
load average 6.6-9.5), and the worker pays a message's fixed cost once. A step alone
on its queue goes as its own task, so a deployment that splits the work over queues
(`SEARCH_INDEX_QUEUE`, `BILLING_QUEUE`, `ALERTS_QUEUE`) gets the messages it had before.

Steps run in registration order (the apps' order in INSTALLED_APPS: indexing, costing,
detection), so detection's cost spikes see the costs of the batch they judge.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpanStep:
    # The step's own Celery task (taking tenant_id= and spans=) as an import path: a web
    # process imports no tasks module until it sends one.
    task: str
    queue: Callable[[], str | None]  # None: Celery's default queue
    enabled: Callable[[], bool] = lambda: True

    @property
    def celery_task(self):
        return import_string(self.task)


_steps: list[SpanStep] = []


def step_register(step: SpanStep) -> None:
    if step not in _steps:
        _steps.append(step)


def _task(name: str):
    """The task of this name; messages name their steps by task name."""
    for step in _steps:
        if step.celery_task.name == name:
            return step.celery_task
    return current_app.tasks[name]


def steps_by_queue() -> dict[str, list[str]]:
    """The enabled steps' task names, grouped by the queue their settings name."""
    default = current_app.conf.task_default_queue
    queues: dict[str, list[str]] = {}
    for step in _steps:
        if step.enabled():
            queues.setdefault(step.queue() or default, []).append(step.celery_task.name)
    return queues


def steps_enqueue(*, tenant_id: int, spans: list, queue: str, steps: list[str]) -> None:
    from tracing.tasks import follow_up_spans

    kwargs = {"tenant_id": tenant_id, "spans": spans}
    try:
        if len(steps) == 1:
            _task(steps[0]).apply_async(kwargs=kwargs, queue=queue)
        else:
            follow_up_spans.apply_async(kwargs=kwargs | {"steps": steps}, queue=queue)
    except Exception as exc:  # noqa: BLE001 - the spans are stored; do not fail the export
        # A broker outage must not turn a stored batch into an error the exporter
        # retries; `manage.py index_traces` rebuilds the search index that was missed.
        log.error("could not queue %s for %d spans: %r", ", ".join(steps), len(spans), exc)


@dataclass(slots=True)
class StepsOutcome:
    transient: list[str]  # to run again later: failed with an error their task retries on
    error: Exception | None = None  # the first other error, raised once the rest have run


def steps_run(*, tenant_id: int, spans: list, steps: list[str]) -> StepsOutcome:
    """Run each step's task body in this process, as its own message would. One step's
    failure does not keep the others from running: costing must not wait on a bug in
    detection."""
    outcome = StepsOutcome(transient=[])
    for name in steps:
        task = _task(name)
        try:
            # Called directly, a task's autoretry raises the error itself: it is
            # sorted here, and only the failed steps are tried again.
            task(tenant_id=tenant_id, spans=spans)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            if isinstance(exc, tuple(getattr(task, "autoretry_for", ()))):
                log.warning("%s failed, to be retried: %r", name, exc)
                outcome.transient.append(name)
            else:
                log.exception("%s failed for %d spans", name, len(spans))
                outcome.error = outcome.error or exc
    return outcome
