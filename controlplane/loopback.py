"""The scaled-out platform's processes started directly on loopback: gunicorn web
processes and Celery workers against one PostgreSQL, Redis and S3, and a TCP proxy that
balances between backends or cuts a service off.

`tests/platform/` proves scale-out and faults with these, and `bench/platform.py`
measures with the same processes, so what is measured is what is tested.
"""

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what} after {timeout} s")


@dataclass
class Process:
    """A started process (its own session, so a signal reaches its children too)."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    port: int | None = None
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to every process of it, as when its machine or container dies."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()

    def terminate(self) -> None:
        """SIGTERM to the parent only, as an orchestrator's stop does: gunicorn's master
        and Celery's main process then stop their children gracefully."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # anything the parent left behind
        if self._log is not None:
            self._log.close()

    def pids(self) -> list[int]:
        """The process and its live descendants (a worker's pool processes, say)."""
        return _tree(self.pid)

    def cpu_seconds(self) -> float:
        """User and system CPU time of the process and its live descendants."""
        return sum(cpu_of(pid) for pid in self.pids())

    def cpu_seconds_with_reaped(self) -> float:
        """As cpu_seconds, plus what their children used before they were reaped: the
        sandboxes of finished runs, say, which a pool process waits for."""
        return sum(cpu_of(pid, reaped=True) for pid in self.pids())

    def pss_mb(self) -> float:
        """PSS of the process and its live descendants (sandboxes of runs under way too)."""
        return sum(pss_mb(pid) for pid in self.pids())


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def cpu_of(pid: int, *, reaped: bool = False) -> float:
    """User and system CPU seconds of one process (0 once it is gone); `reaped` adds
    those of the children it has waited for."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces; the fields after it are fixed.
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def pss_mb(pid: int) -> float:
    """Proportional set size of one process in MB (0 once it is gone): pages shared
    with other processes (a prefork parent's) are split between them, so a sum over
    processes is what they cost the machine together."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spawn(name: str, argv: list[str], *, env: dict, log_path: Path, port=None) -> Process:
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Process.stop
    popen = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Process(name=name, popen=popen, log_path=log_path, port=port, _log=log)


def start_web(*, name: str, env: dict, log_path: Path, threads: int = 4) -> Process:
    """A web process as platform/ deploys one, with one gunicorn worker; returned once
    `/api/v1/health` answers 200 (database, Redis and S3 reached)."""
    port = free_port()
    argv = [GUNICORN, "controlplane.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    argv += ["--threads", str(threads), "--graceful-timeout", "30", "--log-level", "warning"]
    proc = _spawn(name, argv, env=env, log_path=log_path, port=port)

    def healthy():
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{proc.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).is_success
        return False

    wait_until(healthy, timeout=90, what=f"{name} is not healthy", interval=0.2)
    return proc


def start_worker(
    *,
    name: str,
    queues: list[str],
    concurrency: int,
    env: dict,
    log_path: Path,
    pool: str | None = None,
) -> Process:
    """A `celery worker` on `queues` (the settings' prefork pool unless `pool` names
    another, such as "threads"), returned once it is ready."""
    argv = [sys.executable, "-m", "celery", "-A", "controlplane", "worker"]
    argv += ["-Q", ",".join(queues), "-c", str(concurrency), "-n", f"{name}@%h"]
    argv += ["--pool", pool] if pool else []
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    proc = _spawn(name, argv, env=env, log_path=log_path)

    def ready():
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the Celery worker {name} exited:\n{proc.log()[-3000:]}")
        return b" ready." in log_path.read_bytes()

    wait_until(ready, timeout=90, what=f"the Celery worker {name} did not start", interval=0.2)
    return proc


class TcpProxy:
    """A loopback TCP proxy: round robin over its backends, skipping one that refuses
    (a balancer's health check, in its simplest form), and `cut()` to play an outage:
    every open connection is dropped and new ones are closed at once until `restore()`."""

    def __init__(self, backends: list[tuple[str, int]]):
        self.backends = list(backends)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.cut_off = False
        self._next = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self.cut_off = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for _ in range(len(self.backends)):
            with self._lock:
                backend = self.backends[self._next % len(self.backends)]
                self._next += 1
            with contextlib.suppress(OSError):
                return socket.create_connection(backend, timeout=5)
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open |= {client, upstream}
        pair = {client: upstream, upstream: client}
        sel = selectors.DefaultSelector()
        for sock in pair:
            sel.register(sock, selectors.EVENT_READ)
        try:
            while not self.cut_off:
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    pair[key.fileobj].sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            with self._lock:
                self._open -= {client, upstream}
            for sock in pair:
                sock.close()
