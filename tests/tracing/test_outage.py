"""A database outage answers 503 with Retry-After, and the exporter's retry loses nothing."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.services import free_port
from tests.tracing.otlp import provider_for
from tests.tracing.test_otlp_http import one_span_request

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_sql(*statements: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def server(tmp_path):
    name = f"flightdeck_outage_{os.getpid()}"
    admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "FLIGHTDECK_VAR_DIR": str(tmp_path),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [*manage, "create_tenant", "outage"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[-1]
    (tmp_path / "static").mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "controlplane.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "2",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/api/v1/health", timeout=2)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield url, key, name
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        admin_sql(
            f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true",
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        )


def stop_database(name: str) -> None:
    admin_sql(
        f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )


def spans_stored(name: str) -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}") as conn:
        return conn.execute("SELECT COUNT(*) FROM tracing_span").fetchone()[0]


def test_it_answers_503_during_an_outage_and_the_retry_stores_the_batch(server):
    url, key, name = server
    headers = {"Authorization": f"Bearer {key}"}
    body = one_span_request("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    assert httpx.post(f"{url}/v1/traces", json=body, headers=headers).status_code == 200

    stop_database(name)
    down = httpx.post(f"{url}/v1/traces", json=body, headers=headers)
    assert down.status_code == 503
    assert down.headers["Retry-After"] == "5"
    assert down.json()["error"] == "unavailable"

    # The SDK exporter retries a 503 with backoff; bring the database back meanwhile.
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers, timeout=30)
    provider = provider_for(exporter)
    outcome = {}
    original_export = exporter.export

    def export(spans):
        outcome["result"] = original_export(spans)
        return outcome["result"]

    exporter.export = export
    sender = threading.Thread(
        target=lambda: provider.get_tracer("t").start_span("during outage").end()
    )
    sender.start()
    time.sleep(2)
    admin_sql(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
    sender.join(timeout=40)
    provider.shutdown()
    assert outcome["result"] == SpanExportResult.SUCCESS
    assert spans_stored(name) == 2


def test_logs_and_metrics_answer_503_during_an_outage_and_the_retry_stores_them(server):
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    from tests.tracing.codingagents import CLAUDE_CODE, fixture, otlp_json, send

    url, key, name = server
    headers = {"Authorization": f"Bearer {key}"}
    logs = otlp_json(fixture(CLAUDE_CODE), start_ns=1_800_000_000 * 10**9, only=[0, 1])
    point = {"timeUnixNano": str(time.time_ns()), "asDouble": 0.5}
    metrics = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {"name": "claude_code.cost.usage", "gauge": {"dataPoints": [point]}}
                        ]
                    }
                ]
            }  # fmt: skip
        ]
    }
    stop_database(name)
    for path, body in (("/v1/logs", logs), ("/v1/metrics", metrics)):
        down = httpx.post(f"{url}{path}", json=body, headers=headers)
        assert down.status_code == 503, path
        assert down.headers["Retry-After"] == "5" and down.json()["error"] == "unavailable"

    # The SDK's log exporter retries a 503 with backoff; bring the database back meanwhile.
    exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs", headers=headers, timeout=30)
    sender = threading.Thread(target=lambda: send(exporter, fixture(CLAUDE_CODE), only=[0, 1]))
    sender.start()
    time.sleep(2)
    admin_sql(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
    sender.join(timeout=40)
    assert spans_stored(name) == 2
