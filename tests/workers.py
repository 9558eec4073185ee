"""The real Celery worker and the local Messages API server: one of each per test run.

They are defined here, once, and made fixtures for every test by tests/conftest.py. A
session fixture defined (or imported) in two conftests runs twice, and two workers on
the same queues take each other's runs, answering them from the other's Messages API
server: so tests/execution, tests/replay, tests/browser and others share these two.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from execution.devllm.server import serve

ROOT = Path(__file__).resolve().parents[1]
_TAG = (os.environ.get("FLIGHTDECK_REDIS_PREFIX") or f"fdtest-{os.getpid()}:").strip(":")
QUEUES = {
    "run": f"{_TAG}-runs",
    "tools": f"{_TAG}-tools",
    "alerts": f"{_TAG}-alerts",  # detection of the worker's own runs' spans, and delivery
    "inprocess": f"{_TAG}-unconsumed",
}
LEASE_SECONDS = 3


@pytest.fixture(scope="session")
def messages_api():
    """The local Messages API server (in this process, on a free loopback port)."""
    server = serve(port=0)
    yield server
    server.shutdown()


def _database_url(settings_dict) -> str | None:
    if "postgresql" not in settings_dict["ENGINE"]:
        return None
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{settings_dict['USER']}@{host}:{port}/{settings_dict['NAME']}"


def start_worker(*, name: str, queues: list[str], concurrency: int, log_path, env: dict):
    """A real `celery worker` process against the test database, ready when returned."""
    from django.conf import settings

    url = _database_url(settings.DATABASES["default"])
    if url is None or not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("the worker tests need PostgreSQL and Redis")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    full_env.update(
        {
            "DATABASE_URL": url,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "EXECUTION_TOOL_QUEUE": QUEUES["tools"],
            "EXECUTION_LEASE_SECONDS": str(LEASE_SECONDS),
            "EXECUTION_RETRY_BASE_MS": "20",
            **env,
        }
    )
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_worker
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "-Q",
            ",".join(queues),
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc.log_path, proc.log_file = log_path, log
    deadline = time.monotonic() + 60
    while b" ready." not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Celery worker did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.2)
    return proc


def stop_worker(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.log_file.close()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, messages_api, tmp_path_factory):
    """A real `celery worker` process on this run's queues, against the test database."""
    proc = start_worker(
        name=_TAG,
        queues=[QUEUES["run"], QUEUES["tools"], QUEUES["alerts"]],
        concurrency=2,
        log_path=tmp_path_factory.mktemp("worker") / "worker.log",
        env={
            "EXECUTION_QUEUE": QUEUES["run"],
            "EXECUTION_LOCAL_LLM_URL": messages_api.url,
            "ALERTS_QUEUE": QUEUES["alerts"],
        },
    )
    yield proc
    stop_worker(proc)


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s")
