"""Fixtures of managed execution's tests: every test on the local Messages API server and
this run's own queues, loopback tool receivers, and runs sent to the real worker."""

import threading

import pytest

# The worker and the Messages API server are the whole run's (tests/workers.py); the
# names here are what the tests import.
from tests.workers import LEASE_SECONDS, QUEUES, wait_for  # noqa: F401


@pytest.fixture(autouse=True)
def _execution_settings(settings, messages_api, tmp_path_factory):
    """Every test talks to the local Messages API and uses this run's own queues. Runs
    go to a queue no worker reads unless the test asks for the `worker` fixture, so that
    a test running a run in its own process never races the worker."""
    settings.EXECUTION_QUEUE = QUEUES["inprocess"]
    settings.EXECUTION_TOOL_QUEUE = QUEUES["tools"]
    settings.EXECUTION_LLM_BASE_URL = messages_api.url
    settings.EXECUTION_LLM_API_KEY = "local-test-key"
    settings.EXECUTION_RETRY_BASE_MS = 20
    settings.EXECUTION_RETRY_CAP_MS = 500
    messages_api.latency_ms = 0
    messages_api.failures = []
    messages_api.requests = 0
    from execution import llm

    llm._client.cache_clear()
    yield


@pytest.fixture
def upstream():
    """A loopback HTTP server for tools to call (tests/execution/upstream.py)."""
    from tests.execution.upstream import Upstream

    server = Upstream()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _drop_unconsumed_queue():
    yield
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("redis"):
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(QUEUES["inprocess"])


@pytest.fixture
def worker(celery_worker, settings):
    """The real worker, and runs enqueued to it."""
    settings.EXECUTION_QUEUE = QUEUES["run"]
    return celery_worker
