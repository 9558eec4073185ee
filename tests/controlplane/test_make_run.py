"""`make run` in a fresh copy serves the health page and the demo key, starts every
process, and shows a newcomer the example agent's run finished."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def fresh_copy(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def test_it_starts_from_a_fresh_copy(tmp_path):
    fresh_copy(tmp_path)
    assert not (tmp_path / "var").exists()
    port, grpc_port = free_port(), free_port()
    # A clean environment: the embedded default, no services. The installed venv is
    # reused (installing from the registry is what `make run` does on a new machine).
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PORT": str(port),
        "OTLP_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "LLM_PORT": str(free_port()),
        "VENV": str(Path(sys.prefix)),
    }
    log = open(tmp_path / "make-run.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        health = None
        deadline = time.monotonic() + 240  # set-up migrates, collects and seeds first
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        log.seek(0)
        output = log.read()
        assert health is not None and health.status_code == 200, output[-3000:]
        assert health.json()["status"] == "ok"
        key = re.search(r"^api key: (fd_\S+)$", output, re.M).group(1)
        tenant = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/tenant",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert tenant.status_code == 200 and tenant.json()["slug"] == "demo"
        _the_demo_owner_uses_the_console_not_the_admin(output, port)
        assert (tmp_path / "var" / "flightdeck.sqlite3").exists()
        # Every process of the Procfile comes up (they print once they are ready).
        for ready in (f"OTLP/gRPC listening on 127.0.0.1:{grpc_port}", "celery@", "beat: Starting"):
            deadline = time.monotonic() + 60
            while ready not in output and time.monotonic() < deadline:
                time.sleep(0.5)
                log.seek(0)
                output = log.read()
            assert ready in output, output[-3000:]

        # The example agent `make run` registers and queues runs to the end.
        run_id = re.search(r"Queued example run (\d+)", output).group(1)
        run, deadline = None, time.monotonic() + 150
        while time.monotonic() < deadline:
            run = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/runs/{run_id}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            ).json()
            if run["status"] in ("succeeded", "failed", "stopped"):
                break
            time.sleep(1)
        log.seek(0)
        assert run["status"] == "succeeded", (run.get("error"), log.read()[-6000:])
        assert run["agent"] == "calculator" and run["output"]["answer"] == "The tool returned: 42\n"
        assert len(run["trace_id"]) == 32 and run["step_count"] >= 3
        _few_processes_serve_it(output, proc.pid)
        _the_web_process_takes_otlp_grpc(port, grpc_port, key)

        # Served with DEBUG off: no debug pages listing URL patterns or settings, static
        # files still served, and manage.py runs in the same checkout with no variables.
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/nope", timeout=5).json()["error"] == "not_found"
        page = httpx.get(f"{base}/no-such-page", timeout=5)
        assert page.status_code == 404 and "URLconf" not in page.text
        assert httpx.get(f"{base}/static/frontend/app.js", timeout=5).status_code == 200
        assert (
            "script-src 'self'"
            in httpx.get(f"{base}/login/", timeout=5).headers["content-security-policy"]
        )
        command = subprocess.run(
            [str(Path(sys.prefix) / "bin" / "python"), "manage.py", "showmigrations", "tracing"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert command.returncode == 0 and "[X] 0001_initial" in command.stdout, command.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _the_demo_owner_uses_the_console_not_the_admin(output: str, port: int) -> None:
    console = f"http://127.0.0.1:{port}/t/demo/"
    assert f"the console is {console}" in output and "/admin/" not in output, output[-3000:]
    login = re.search(r"^login: (\S+)$", output, re.M).group(1)
    password = re.search(r"^password: (\S+)$", output, re.M).group(1)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as browser:
        browser.get("/login/")
        resp = browser.post(
            "/login/",
            data={
                "username": login,
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"http://127.0.0.1:{port}/login/"},
        )
        assert resp.status_code == 302
        page = browser.get(console, follow_redirects=True)
        assert page.status_code == 200 and str(page.url).endswith("/t/demo/traces/")
        assert 'href="/t/demo/settings/"' in page.text
        admin = browser.get("/admin/")
        assert admin.status_code == 302 and admin.headers["location"].startswith("/admin/login/")


def _few_processes_serve_it(output: str, session: int) -> None:
    """The web process serves OTLP/gRPC, the worker runs beat and slow tools: with
    honcho's own, eight Python processes (eleven did this, 1.4 GB after some traffic)."""
    assert re.search(r"^\S+ web\.1 +\| .*OTLP/gRPC listening", output, re.M), output[-3000:]
    assert re.search(r"^\S+ worker\.1 +\| .*beat: Starting", output, re.M), output[-3000:]
    pythons = []
    for entry in Path("/proc").iterdir():
        try:
            in_session = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session
            exe = os.readlink(entry / "exe") if in_session else ""
        except (OSError, ValueError, IndexError):
            continue
        if "python" in Path(exe).name:
            pythons.append((entry / "cmdline").read_bytes().replace(b"\0", b" ")[:100])
    assert len(pythons) <= 8, pythons


def _the_web_process_takes_otlp_grpc(port: int, grpc_port: int, key: str) -> None:
    """A span sent by the OpenTelemetry SDK's gRPC exporter is stored and read back."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{grpc_port}",
        insecure=True,
        headers={"authorization": f"Bearer {key}"},
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("make-run-test").start_as_current_span("over-grpc") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
    provider.shutdown()
    trace = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/traces/{trace_id}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert trace.status_code == 200 and trace.json()["trace"]["name"] == "over-grpc", trace.text
