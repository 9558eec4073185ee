"""The sandbox escape suite: an agent tries each way out; each one is contained, and
the limits it runs into are recorded on the run and its trace. Hostile archives in the
blob store are refused when a worker unpacks them, in bounded memory.

The agent runs in the real sandbox (bubblewrap here) through the real runtime and
gateway, in this process, as the worker would run it.
"""

import os
import secrets
import tracemalloc
import uuid
from pathlib import Path

import pytest

from controlplane.tenancy import tenant_scope
from execution.bundles import bundle_store
from execution.models import AgentVersion
from tests.execution.bundles import (
    agent_with_bundle,
    make_bundle,
    run_now,
    tar_gz_with_folders,
    tar_gz_with_long_name,
    tar_gz_with_pax_header,
    zip_bomb,
)

ESCAPES = """
import os, socket, time

def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__ + ": " + str(exc)}

def network():
    out = {}
    for host, port in (("127.0.0.1", PG_PORT), ("1.1.1.1", 53), ("::1", PG_PORT)):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        def connect(host=host, port=port, family=family):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect((host, port))
        out[f"{host}:{port}"] = attempt(connect)
    out["dns"] = attempt(lambda: socket.getaddrinfo("pypi.org", 443))
    return out

def read_host():
    return {p: attempt(lambda p=p: open(p, "rb").read(100).decode(errors="replace"))
            for p in ("/etc/passwd", "/etc/shadow", HOST_FILE, "/root/.bashrc", "/proc/1/environ")}

def pid1_environment():
    return open("/proc/1/environ", "rb").read().decode(errors="replace")

def pid1_command_line():
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as exc:
            fds[fd] = type(exc).__name__
    return {"cmdline": open("/proc/1/cmdline", "rb").read().decode(errors="replace"), "fds": fds}

def descriptor_paths():
    out = {}
    for folder in ("/proc/self/fd", "/proc/1/fd"):
        for fd in attempt(lambda folder=folder: os.listdir(folder)).get("value") or []:
            try:
                out[f"{folder}/{fd}"] = os.readlink(f"{folder}/{fd}")
            except OSError as exc:
                out[f"{folder}/{fd}"] = type(exc).__name__
    return out

def write_host():
    return {p: attempt(lambda p=p: open(p, "w").write("pwned"))
            for p in ("/usr/pwned", "/fd/bundle/pwned", "/fd/runtime/pwned", HOST_TARGET)}

def other_runs():
    return {"read": attempt(lambda: open(OTHER_RUN_FILE).read()),
            "listdir_fd": sorted(os.listdir("/fd")),
            "listdir_root": sorted(os.listdir("/"))}

def environment():
    status = open("/proc/self/status").read()
    caps = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")]
    return {"env": dict(os.environ), "cap_eff": caps[0], "uid": os.getuid()}

def fork_bomb():
    children, error, refused = [], None, 0
    for _ in range(10000):
        try:
            pid = os.fork()
        except OSError as exc:
            error, refused = str(exc), refused + 1
            if refused == 5:
                break
            continue
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, 9)
    return {"forked": len(children), "error": error, "refused": refused}

def memory_bomb():
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))

def busy_loop():
    while True:
        pass

def sleeper():
    time.sleep(60)

def big_file():
    with open("/fd/scratch/big", "wb") as fh:
        return attempt(lambda: [fh.write(b"x" * (1 << 20)) for _ in range(64)] and None)

def big_log():
    import sys
    written = 0
    try:
        for _ in range(4):
            sys.stdout.write("x" * (1 << 20))
            written += 1
    except OSError as exc:
        return {"written_mb": written, "error": type(exc).__name__}
    return {"written_mb": written, "error": None}

def gateway_flood():
    import json
    socks, answered = [], 0
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(os.environ["FD_SOCKET"])
        except OSError:
            continue  # the backlog is full: refused, which is the point
        socks.append(s)
    for s in socks:
        try:
            s.sendall(json.dumps({"op": "hello", "args": {}}).encode() + b"\\n")
            if s.recv(65536):
                answered += 1
        except OSError:
            pass
    return {"answered": answered}

def main(ctx, input):
    return globals()[input["check"]]()
"""


@pytest.fixture
def other_run_file(settings):
    """A file in another run's folder, where that run would keep its scratch."""
    folder = Path(settings.EXECUTION_WORK_DIR) / f"run-999999-{secrets.token_hex(4)}" / "scratch"
    folder.mkdir(parents=True)
    secret = folder / "secret.txt"
    secret.write_text("other run's secret")
    yield secret
    import shutil

    shutil.rmtree(folder.parent)


def _backends():
    from execution.sandbox import BubblewrapBackend
    from execution.sandbox.runsc import RunscBackend

    return [b.name for b in (BubblewrapBackend, RunscBackend) if b.available()]


@pytest.fixture(params=_backends())
def escaper(request, acme, transactional_db, other_run_file, tmp_path, settings):
    """Runs one escape attempt in each sandbox backend installed here."""
    settings.EXECUTION_SANDBOX = request.param
    host_file = Path(__file__).resolve().parents[2] / "controlplane" / "settings.py"
    host_target = tmp_path / "written-from-the-sandbox"
    code = (
        ESCAPES.replace("PG_PORT", "5432")
        .replace("HOST_FILE", repr(str(host_file)))
        .replace("HOST_TARGET", repr(str(host_target)))
        .replace("OTHER_RUN_FILE", repr(str(other_run_file)))
    )
    agent = agent_with_bundle(acme, name="escaper", code=code)

    def attempt(check, **limits):
        run = run_now(acme, agent, input={"check": check}, limits=limits or None)
        return run

    attempt.host_target = host_target
    return attempt


def test_it_gives_the_agent_no_network(escaper):
    run = escaper("network")
    assert run.status == "succeeded", run.error
    for target, result in run.output.items():
        assert result["ok"] is False, (target, result)


def test_it_hides_host_files(escaper):
    run = escaper("read_host")
    assert run.status == "succeeded", run.error
    for path, result in run.output.items():
        if path == "/proc/1/environ":
            # The sandbox's own pid 1, with a clean environment: nothing of the host's.
            assert "SECRET" not in result.get("value", "") and "DATABASE" not in result.get(
                "value", ""
            )
        else:
            assert result["ok"] is False and "FileNotFoundError" in result["error"], (path, result)


def test_it_gives_pid_1_nothing_of_the_hosts_environment(escaper):
    # Under bubblewrap pid 1 is bubblewrap's own, started with an empty environment;
    # under gVisor it is the agent's interpreter, with the sandbox's environment.
    run = escaper("pid1_environment")
    assert run.status == "succeeded", run.error
    names = {entry.split("=", 1)[0] for entry in run.output.split("\x00") if entry}
    assert names <= {"PATH", "HOME", "FD_SOCKET", "FD_BUNDLE", "PYTHONUNBUFFERED"}, run.output
    for host_path in (str(Path.cwd()), str(Path(__file__).resolve().parents[2])):
        assert host_path not in run.output


def test_it_hides_the_sandboxs_own_arguments_from_pid_1(escaper, settings):
    # bubblewrap's pid 1 is bubblewrap itself: its command line would name the run's
    # folder under EXECUTION_WORK_DIR and every bind, so they reach it through a
    # descriptor (--args), which is closed before the agent starts.
    run = escaper("pid1_command_line")
    assert run.status == "succeeded", run.error
    cmdline = run.output["cmdline"]
    assert settings.EXECUTION_WORK_DIR not in cmdline and "--bind" not in cmdline, cmdline
    assert "/fd/" not in cmdline.replace("/fd/runtime/fdrt.py", ""), cmdline
    assert not [target for target in run.output["fds"].values() if "bwrap-args" in target]


def test_it_names_no_host_path_in_the_agents_descriptors(escaper, settings):
    # The agent's stdout and stderr are the run's log on the host: read through
    # /proc/self/fd/1 they named the run's folder under EXECUTION_WORK_DIR.
    run = escaper("descriptor_paths")
    assert run.status == "succeeded", run.error
    paths = run.output
    assert {"/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"} <= set(paths), paths
    for fd, target in paths.items():
        assert settings.EXECUTION_WORK_DIR not in target and "run-" not in target, (fd, target)
        assert "agent.log" not in target or target.startswith("/fd/"), (fd, target)


def test_it_keeps_the_system_and_bundle_read_only(escaper):
    run = escaper("write_host")
    assert run.status == "succeeded", run.error
    for path, result in run.output.items():
        assert result["ok"] is False, (path, result)
    assert not escaper.host_target.exists()


def test_it_hides_other_runs_folders(escaper):
    run = escaper("other_runs")
    assert run.status == "succeeded", run.error
    assert run.output["read"]["ok"] is False
    assert run.output["listdir_fd"] == ["bundle", "runtime", "scratch", "sock"]
    assert "work" not in run.output["listdir_root"] and "root" not in run.output["listdir_root"]


def test_it_keeps_secrets_out_of_the_environment(escaper, monkeypatch, settings):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
    run = escaper("environment")
    assert run.status == "succeeded", run.error
    # PWD comes from the sandbox's chdir, LC_CTYPE from Python's locale coercion.
    assert set(run.output["env"]) <= {
        "PATH",
        "HOME",
        "FD_SOCKET",
        "FD_BUNDLE",
        "PYTHONUNBUFFERED",
        "PWD",
        "LC_CTYPE",
    }
    assert "sk-ant-must-not-leak" not in str(run.output) and settings.SECRET_KEY not in str(
        run.output
    )
    assert int(run.output["cap_eff"], 16) == 0  # no capabilities


def limit_events(tenant, run) -> list[dict]:
    """The limit-hit events on the run's root span, as the trace store keeps them."""
    from tracing import selectors
    from tracing.models import Span

    with tenant_scope(tenant):
        root = Span.objects.get(trace_id=uuid.UUID(run.trace_id), parent_span_id=None)
        events = selectors.span_detail(span=root)["events"]
    return [e["attributes"] for e in events if e["name"] == "flightdeck.limit.hit"]


def test_it_contains_a_fork_bomb_and_records_it(escaper, acme, settings, api, make_key):
    run = escaper("fork_bomb", max_processes=16)
    assert run.status == "succeeded", run.error
    assert run.output["forked"] < 16
    assert "Resource temporarily unavailable" in run.output["error"]
    # Each refused fork is counted: by the pids cgroup under bubblewrap, by the
    # sentry's strace under gVisor.
    assert run.limit_hits == {"max_processes": run.output["refused"]} == {"max_processes": 5}
    (event,) = limit_events(acme, run)
    assert event["flightdeck.limit.name"] == "max_processes"
    assert event["flightdeck.limit.value"] == 16 and event["flightdeck.limit.hits"] == 5
    shown = api.get(f"/api/v1/runs/{run.pk}", key=make_key(acme, "read")).json()
    assert shown["limit_hits"] == run.limit_hits


def test_it_stops_a_memory_bomb(escaper, acme):
    run = escaper("memory_bomb", memory_mb=128)
    assert (run.status, run.stop_reason) == ("stopped", "memory"), (run.error, run.logs)
    assert run.limit_hits == {"memory_mb": 1}
    assert [e["flightdeck.limit.name"] for e in limit_events(acme, run)] == ["memory_mb"]


def test_it_stops_a_busy_loop_for_cpu(escaper):
    run = escaper("busy_loop", cpu_seconds=1, wall_seconds=30)
    assert (run.status, run.stop_reason) == ("stopped", "cpu"), (run.error, run.logs)
    assert run.limit_hits == {"cpu_seconds": 1}


def test_it_stops_a_run_past_its_wall_time(escaper):
    run = escaper("sleeper", wall_seconds=1)
    assert (run.status, run.stop_reason) == ("stopped", "time")
    assert run.limit_hits == {"wall_seconds": 1}


def test_it_records_nothing_for_a_run_within_its_limits(escaper):
    run = escaper("environment")
    assert run.status == "succeeded" and run.limit_hits == {}


def test_it_bounds_file_size(escaper):
    run = escaper("big_file", max_file_mb=1)
    assert run.status == "succeeded", run.error
    assert run.output["ok"] is False and "File too large" in run.output["error"]


def test_it_bounds_the_agents_log_by_the_file_size_limit(escaper):
    # The log reaches the host through a pipe; its copier stops at max_file_mb and
    # closes the pipe, so the write past it fails, as one past RLIMIT_FSIZE did.
    run = escaper("big_log", max_file_mb=1)
    assert run.status == "succeeded", run.error
    assert run.output == {"written_mb": 1, "error": "BrokenPipeError"}, run.output
    assert run.logs and set(run.logs) == {"x"}


def test_it_runs_each_sandbox_as_its_own_unprivileged_user(escaper, settings):
    if os.geteuid() != 0:
        pytest.skip("per-sandbox uids need the worker to run as root")
    run = escaper("environment")
    base = settings.EXECUTION_SANDBOX_UID_BASE
    assert base <= run.output["uid"] < base + settings.EXECUTION_SANDBOX_UID_COUNT


def test_it_caps_the_gateway_connections_of_a_run(escaper):
    run = escaper("gateway_flood")
    assert run.status == "succeeded", run.error
    assert 0 < run.output["answered"] <= 64  # the runtime's own connection is one of them


MANIFEST = 'entrypoint = "agent:main"\n'
AGENT = "def main(ctx, input):\n    return 1\n"
HOSTILE_ARCHIVES = {
    "pax-header": ("tar.gz", lambda: tar_gz_with_pax_header(1536 * 1024 * 1024)),
    "gnu-long-name": ("tar.gz", lambda: tar_gz_with_long_name(1024 * 1024)),
    "tar-bomb": (
        "tar.gz",
        lambda: make_bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "z": bytes(60 << 20)}),
    ),
    "zip-bomb": ("zip", lambda: zip_bomb(64 * 1024 * 1024)),
    "folder-flood": (
        "tar.gz",
        lambda: tar_gz_with_folders(
            {"flightdeck.toml": MANIFEST, "agent.py": AGENT}, [f"d{i}" for i in range(3000)]
        ),
    ),
}


@pytest.mark.parametrize("kind", HOSTILE_ARCHIVES)
def test_it_refuses_a_hostile_archive_in_the_store_in_bounded_memory(acme, transactional_db, kind):
    """The archive a worker unpacks is trusted no more than the uploaded one: here the
    store's copy of a checked bundle has been swapped for a hostile one."""
    agent = agent_with_bundle(acme, name="swapped", code=AGENT)
    fmt, build = HOSTILE_ARCHIVES[kind]
    sha = bundle_store(tenant_id=acme.id, data=build(), fmt=fmt)
    AgentVersion.all_tenants.filter(agent=agent).update(bundle_sha256=sha, bundle_format=fmt)
    tracemalloc.start()
    try:
        run = run_now(acme, agent)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run.status == "failed" and "the bundle cannot be used" in run.error, run.error
    assert peak < 32 * 1024 * 1024, f"{peak} bytes allocated"
