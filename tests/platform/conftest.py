"""Fixtures of the scale-out tests: the platform's own processes (controlplane/loopback.py)
against this run's PostgreSQL test database, Redis and moto S3, on queues of their own.

The suite's budget: each test is cut off by its timeout below, and the slow ones together
stay within about four minutes on a quiet 2-core machine."""

import os
from collections import Counter

import pytest
from django.conf import settings

from controlplane.loopback import Process, start_web, start_worker
from tests.workers import _TAG, _database_url

QUEUE = f"{_TAG}-platform"  # the platform tests' runs and tools
UNCONSUMED = f"{_TAG}-platform-later"  # what ingest queues for indexing, costing, alerts
TEST_TIMEOUT = 150  # seconds, per test


def process_env(**extra: str) -> dict[str, str]:
    """The environment every platform process reads (platform/processes.md), pointed at
    this run's services; `extra` overrides (a proxy's address, say)."""
    url = _database_url(settings.DATABASES["default"])
    if url is None or not (settings.CELERY_BROKER_URL or "").startswith("redis"):
        pytest.skip("the platform tests need PostgreSQL and Redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(
        {
            "DATABASE_URL": url,
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(settings.BASE_DIR),
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "SEARCH_INDEX_QUEUE": UNCONSUMED,
            "BILLING_QUEUE": UNCONSUMED,
            "ALERTS_QUEUE": UNCONSUMED,
            "EXECUTION_QUEUE": QUEUE,
            "EXECUTION_TOOL_QUEUE": QUEUE,
            "EXECUTION_LEASE_SECONDS": "3",
            "EXECUTION_RETRY_BASE_MS": "20",
            "EGRESS_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32",
            **extra,
        }
    )
    return env


@pytest.fixture
def launch(tmp_path):
    """launch.web(name, **env) / launch.worker(name, **env): processes stopped after
    the test, whatever it did to them."""
    started: list[Process] = []

    class Launch:
        @staticmethod
        def web(name: str, **env: str) -> Process:
            proc = start_web(name=name, env=process_env(**env), log_path=tmp_path / f"{name}.log")
            started.append(proc)
            return proc

        @staticmethod
        def worker(name: str, concurrency: int = 2, **env: str) -> Process:
            proc = start_worker(
                name=f"{_TAG}-{name}",
                queues=[QUEUE],
                concurrency=concurrency,
                env=process_env(**env),
                log_path=tmp_path / f"{name}.log",
            )
            started.append(proc)
            return proc

    yield Launch
    for proc in started:
        proc.stop()


@pytest.fixture(autouse=True)
def _drop_queued(request):
    yield
    import redis

    if (settings.CELERY_BROKER_URL or "").startswith("redis"):
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(UNCONSUMED, QUEUE)


def stored_spans(tenant) -> Counter:
    """How many rows each (trace id, span id) of the tenant has."""
    from tracing.models import Span

    rows = Span.all_tenants.filter(tenant=tenant).values_list("trace_id", "span_id")
    return Counter((trace_id.int, span_id) for trace_id, span_id in rows)
