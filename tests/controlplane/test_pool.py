"""Workers run the pool that notices a killed pool process quickly (controlplane/pool.py;
tests/replay/test_resume.py measures the pickup it buys)."""

from celery.concurrency import get_implementation

from controlplane import pool
from controlplane.celery import app


def test_it_gives_workers_the_pool_that_reaps_twice_a_second():
    assert get_implementation(app.conf.worker_pool) is pool.TaskPool
    assert pool.TaskPool.Pool is pool.AsynPool
    assert pool.MAINTAIN_EVERY_SECONDS <= 1
