"""Beat is single: two beat processes started by mistake each send every periodic job,
and each job still runs once a period (its delivery claims the period in the database)."""

from datetime import timedelta

import pytest
from celery.beat import ScheduleEntry, Scheduler
from django.utils import timezone

from controlplane.models import PeriodicClaim
from controlplane.services import periodic_job_claim
from tests.workers import QUEUES, wait_for

JOB = "alerts.stuck_runs"  # every 30 s, harmless to run here


def beat_sends(job: str) -> None:
    """What one beat does when the job is due: publish it to the broker."""
    from controlplane.celery import app

    beat = Scheduler(app, lazy=True)
    entry = ScheduleEntry(
        name=job, task=job, schedule=timedelta(seconds=30), options={"queue": QUEUES["alerts"]}
    )
    entry.app = app
    beat.apply_async(entry)


def deliveries(job: str) -> int:
    claim = PeriodicClaim.objects.filter(name=job).first()
    return claim.runs + claim.skipped if claim else 0


@pytest.mark.postgres  # the worker process shares the test database
@pytest.mark.django_db(transaction=True)
def test_it_runs_a_job_once_when_two_beats_send_it(celery_worker):
    beat_sends(JOB)
    beat_sends(JOB)  # the second beat, started by mistake
    wait_for(lambda: deliveries(JOB) == 2, timeout=60)
    claim = PeriodicClaim.objects.get(name=JOB)
    assert (claim.runs, claim.skipped) == (1, 1)
    # A period later it runs again: a claim holds one period, not forever.
    PeriodicClaim.objects.filter(name=JOB).update(
        claimed_at=claim.claimed_at - timedelta(seconds=30)
    )
    beat_sends(JOB)
    wait_for(lambda: deliveries(JOB) == 3, timeout=60)
    claim.refresh_from_db()
    assert (claim.runs, claim.skipped) == (2, 1)


@pytest.mark.django_db
def test_it_claims_each_period_once(settings):
    assert periodic_job_claim(name="execution.requeue_lost_runs") is True
    assert periodic_job_claim(name="execution.requeue_lost_runs") is False
    period = settings.CELERY_BEAT_SCHEDULE["execution.requeue_lost_runs"]["schedule"]
    PeriodicClaim.objects.update(claimed_at=timezone.now() - timedelta(seconds=period))
    assert periodic_job_claim(name="execution.requeue_lost_runs") is True
    claim = PeriodicClaim.objects.get()
    assert (claim.runs, claim.skipped) == (2, 1)
    assert periodic_job_claim(name="not.a.beat.job") is True  # nothing to claim
    assert not PeriodicClaim.objects.filter(name="not.a.beat.job").exists()


def test_it_runs_directly_called_jobs_without_a_claim(db):
    from alerts.tasks import stuck_runs

    stuck_runs()
    stuck_runs()
    assert not PeriodicClaim.objects.exists()
