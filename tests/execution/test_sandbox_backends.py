"""Choosing a sandbox backend, and production refusing to run agents unsandboxed."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from execution.sandbox import (
    SANDBOX_PYTHON,
    BubblewrapBackend,
    SandboxSpec,
    backend_class,
    get_backend,
)
from execution.sandbox.resources import Limits, cgroup_controllers

ROOT = Path(__file__).resolve().parents[2]


def manage_check(tmp_path, **env):
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    full.update({"FLIGHTDECK_VAR_DIR": str(tmp_path), "SECRET_KEY": "x" * 50}, **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_an_unsandboxed_backend_with_debug_off(tmp_path, settings):
    result = manage_check(tmp_path, DEBUG="0", EXECUTION_SANDBOX="unsandboxed")
    assert result.returncode == 2
    assert "EXECUTION_SANDBOX=unsandboxed is refused with DEBUG off" in result.stderr
    assert manage_check(tmp_path, DEBUG="1", EXECUTION_SANDBOX="unsandboxed").returncode == 0
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="refused with DEBUG off"):
        backend_class("unsandboxed")
    with pytest.raises(ImproperlyConfigured, match="is not one of"):
        backend_class("docker")


def test_it_picks_gvisor_when_installed_and_bubblewrap_otherwise(settings):
    from execution.sandbox.runsc import RunscBackend

    expected = RunscBackend if RunscBackend.available() else BubblewrapBackend
    assert backend_class("auto") is expected


def test_it_bounds_a_sandbox_with_cgroups_where_the_machine_offers_them(tmp_path):
    from execution.runner import run_dirs

    folder = run_dirs(0)
    scratch = folder / "scratch"
    out = tmp_path / "out.txt"
    with open(out, "wb") as fh:
        started = time.monotonic()
        box = get_backend("bwrap").start(
            SandboxSpec(
                argv=[SANDBOX_PYTHON, "-S", "-I", "-c", "print(open('/proc/self/cgroup').read())"],
                scratch=scratch,
                limits=Limits(wall_seconds=10, memory_mb=64, max_processes=8),
                stdout=fh,
            )
        )
        try:
            outcome = box.wait()
            paths = dict(box.cgroups.paths)
        finally:
            box.close()
    assert outcome.returncode == 0 and time.monotonic() - started < 5, out.read_text()
    assert set(paths) == set(BubblewrapBackend.cgroup_controllers) & set(cgroup_controllers())
    for path in paths.values():
        # The uid slot's group: kept for the slot's next sandbox, empty now, and bounded.
        assert path.name.startswith("flightdeck-slot-")
        assert (path / "cgroup.procs").read_text() == ""
    if "memory" in paths:
        assert int((paths["memory"] / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    import shutil

    shutil.rmtree(folder)


def test_it_sweeps_what_a_dead_worker_left_behind(settings):
    from execution.sandbox.sweep import sweep_leftovers

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer exists
    work = Path(settings.EXECUTION_WORK_DIR)
    folder = work / f"run-1-p{dead.pid}-abc"
    (folder / "scratch").mkdir(parents=True)
    live = work / f"run-2-p{__import__('os').getpid()}-abc"
    live.mkdir()
    groups = [parent / f"flightdeck-run1-p{dead.pid}-1" for parent in cgroup_controllers().values()]
    for group in groups:
        group.mkdir()
    try:
        assert sweep_leftovers.__wrapped__() >= 1 + len(groups)
        assert not folder.exists() and live.exists()
        assert not any(group.exists() for group in groups)
    finally:
        live.rmdir()


@pytest.mark.django_db(transaction=True)
def test_it_runs_agents_unsandboxed_only_for_development(acme, settings):
    """Development machines without bubblewrap or gVisor: rlimits and a clean
    environment, no isolation; allowed only with DEBUG on."""
    from tests.execution.bundles import agent_with_bundle, run_now

    settings.DEBUG = True
    settings.EXECUTION_SANDBOX = "unsandboxed"
    code = "import os\ndef main(ctx, input):\n    return {'n': ctx.random() < 1, 'env': sorted(os.environ)}\n"
    run = run_now(acme, agent_with_bundle(acme, name="dev", code=code))
    assert run.status == "succeeded", (run.error, run.logs)
    assert run.output["n"] is True
    assert "DATABASE_URL" not in run.output["env"] and "SECRET_KEY" not in run.output["env"]
