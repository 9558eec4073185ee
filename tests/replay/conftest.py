"""Replay's tests run agents the way execution's do: the local Messages API server, a
real Celery worker on this test run's own queues, loopback tool receivers."""

from tests.execution.conftest import (  # noqa: F401 - fixtures
    _drop_unconsumed_queue,
    _execution_settings,
    upstream,
    worker,
)
