"""Celery plumbing shared by every app's tasks."""

import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.db import OperationalError

from controlplane.tenancy import tenant_scope

log = logging.getLogger(__name__)


class TenantTask(DjangoTask):
    """Runs the task body scoped to its `tenant_id` keyword argument.

    DjangoTask gives `delay_on_commit`/`apply_async_on_commit` (a plain Task has neither).
    """

    abstract = True

    def __call__(self, *args, **kwargs):
        tenant_id = kwargs.get("tenant_id")
        if tenant_id is None:
            raise TypeError(f"{self.name} is a tenant task and needs tenant_id=")
        with tenant_scope(int(tenant_id)):
            return super().__call__(*args, **kwargs)


def span_batch_task(*, name: str, autoretry_for: tuple = (OperationalError,)):
    """The shape of a task over one batch of newly stored spans (costing, detection):
    scoped to its tenant, redelivered when its worker dies, retried with backoff on a
    transient error. Its body must be safe to run twice."""
    return shared_task(
        base=TenantTask,
        name=name,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=autoretry_for,
        retry_backoff=True,
        max_retries=5,
        soft_time_limit=300,
        time_limit=330,
        ignore_result=True,
    )


class PeriodicTask(DjangoTask):
    """A beat job. Each delivery first claims the job's period in the database
    (services.periodic_job_claim); a delivery inside a claimed period (a second beat,
    started by mistake) does nothing. Called directly (tests, a shell) it just runs."""

    abstract = True

    def __call__(self, *args, **kwargs):
        from controlplane.services import periodic_job_claim  # needs the apps loaded

        if not self.request.called_directly and not periodic_job_claim(name=self.name):
            log.info("%s: already run in this period (is a second beat running?)", self.name)
            return None
        return super().__call__(*args, **kwargs)


def periodic_task(*, name: str, **options):
    """The shape of a beat job: claimed once a period (PeriodicTask), no result kept."""
    return shared_task(base=PeriodicTask, name=name, ignore_result=True, **options)
