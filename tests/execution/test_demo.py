"""`make run` in a fresh copy registers the example agent and runs it to the end."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.controlplane.test_make_run import fresh_copy
from tests.services import free_port

pytestmark = pytest.mark.slow


def test_it_shows_a_newcomer_a_finished_example_run(tmp_path):
    fresh_copy(tmp_path)
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PORT": str(port),
        "LLM_PORT": str(free_port()),
        "OTLP_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
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
        run, output = None, ""
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            log.seek(0)
            output = log.read()
            key = re.search(r"^api key: (fd_\S+)$", output, re.M)
            queued = re.search(r"Queued example run (\d+)", output)
            if not (key and queued):
                continue
            try:
                run = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/runs/{queued.group(1)}",
                    headers={"Authorization": f"Bearer {key.group(1)}"},
                    timeout=5,
                ).json()
            except httpx.TransportError:
                continue
            if run["status"] in ("succeeded", "failed", "stopped"):
                break
        assert run is not None and run["status"] == "succeeded", (
            run.get("error") if run else None,
            output[-6000:],
        )
        assert run["agent"] == "calculator" and run["output"]["answer"] == "The tool returned: 42\n"
        assert len(run["trace_id"]) == 32 and run["step_count"] >= 3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
