"""Test set-up of the real services, loaded with `-p tests.services` before Django.

It runs before pytest-django reads the settings, so the environment it sets decides
which database, broker and blob store the whole suite uses:
- PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 when reachable;
- an S3-compatible server (moto) started here on loopback, reached through boto3.
Under CI=true an unreachable service stops the run; otherwise the suite falls back to
SQLite and a blob folder and says what it skipped.
"""

import atexit
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EMBEDDED = os.environ.get("FLIGHTDECK_TEST_DB") == "sqlite"
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

available: dict[str, bool] = {}
missing: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _probe_postgres() -> str | None:
    try:
        import psycopg

        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=3
        ) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL at {PG_HOST}:{PG_PORT}: {exc}"
    return None


def _probe_redis() -> str | None:
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}"
    return None


def _start_s3() -> tuple[str | None, str | None]:
    port = free_port()
    log = open(Path(tempfile.gettempdir()) / f"flightdeck-moto-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"S3 (moto server) exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return url, None
        except OSError:
            time.sleep(0.1)
    return None, "S3 (moto server) did not start within 30 s"


def _create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)


def _configure() -> None:
    # Fake credentials for the loopback S3 server; never real ones in tests.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-used-anywhere-else")
    var_dir = Path(tempfile.mkdtemp(prefix="flightdeck-test-var-"))
    os.environ["FLIGHTDECK_VAR_DIR"] = str(var_dir)

    # One database per checkout, so two work trees can run their suites side by side.
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
    # FLIGHTDECK_TEST_DB=sqlite runs the suite on the embedded default by choice (make
    # test does, for the span path and its readers): PostgreSQL is not missing then, and
    # only the tests that need PostgreSQL itself are skipped.
    problem = None if EMBEDDED else _probe_postgres()
    if EMBEDDED:
        os.environ["DATABASE_URL"] = f"sqlite:///{var_dir / 'test.sqlite3'}"
    elif problem is None:
        available["postgres"] = True
        os.environ["DATABASE_URL"] = f"postgres://postgres@{PG_HOST}:{PG_PORT}/flightdeck_{tag}"
    else:
        missing["postgres"] = problem
        os.environ["DATABASE_URL"] = f"sqlite:///{var_dir / 'test.sqlite3'}"

    problem = _probe_redis()
    if problem is None:
        available["redis"] = True
        os.environ["REDIS_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
        os.environ["CELERY_BROKER_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/1"
        os.environ["FLIGHTDECK_REDIS_PREFIX"] = f"fdtest-{tag}-{os.getpid()}:"
    else:
        missing["redis"] = problem

    endpoint, problem = _start_s3()
    if endpoint:
        bucket = f"flightdeck-test-{tag}"
        try:
            _create_bucket(endpoint, bucket)
        except Exception as exc:  # noqa: BLE001
            problem = f"S3 bucket creation on {endpoint}: {exc}"
        else:
            available["s3"] = True
            os.environ["S3_TEST_ENDPOINT"] = endpoint
            os.environ["BLOB_STORE_URL"] = f"s3://{bucket}?endpoint_url={endpoint}"
    if problem:
        missing["s3"] = problem
        os.environ["BLOB_STORE_URL"] = f"file://{var_dir / 'blobs'}"

    os.environ["FLIGHTDECK_TEST_MISSING"] = json.dumps(missing)
    if CI and missing:
        sys.stderr.write(
            "CI=true and these services cannot be reached, so the suite does not run:\n"
            + "".join(f"  - {m}\n" for m in missing.values())
        )
        sys.exit(3)


# xdist workers inherit the controller's environment, so only the controller probes.
if "PYTEST_XDIST_WORKER" not in os.environ:
    _configure()
else:
    missing.update(json.loads(os.environ.get("FLIGHTDECK_TEST_MISSING", "{}")))


def pytest_report_header(config):
    used = ", ".join(sorted(available)) or "none"
    lines = [f"real services: {used}"]
    if EMBEDDED:
        lines.append("database: the embedded default, SQLite (FLIGHTDECK_TEST_DB=sqlite)")
    lines += [f"not reachable, tests needing it are skipped: {m}" for m in missing.values()]
    return lines


def pytest_collection_modifyitems(config, items):
    for item in items:
        if EMBEDDED and item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL; this run is on SQLite"))
            continue
        for service in ("postgres", "redis"):
            if item.get_closest_marker(service) and service in missing:
                item.add_marker(pytest.mark.skip(reason=f"needs {missing[service]}"))


def pytest_terminal_summary(terminalreporter):
    if missing:
        terminalreporter.write_line("Services skipped (set CI=true to make these fail):")
        for problem in missing.values():
            terminalreporter.write_line(f"  - {problem}")
