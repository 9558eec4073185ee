"""What every sandbox backend shares: the spec of a sandbox, the started sandbox
(wall time, CPU time, kill, outcome, clean-up) and the Backend that starts one inside
its cgroups, uid slot and rlimits. A backend subclass says how to confine the command
(`wrap`); the backends live in __init__.py and runsc.py, which both import this module
and not each other."""

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from execution.sandbox.resources import CgroupSet, Limits, UidSlot, rlimit_args
from execution.sandbox.sweep import sweep_leftovers

SANDBOX_PYTHON = "/usr/bin/python3"


@dataclass
class SandboxSpec:
    argv: list[str]  # the command, as seen inside the sandbox
    scratch: Path  # host folder, writable, mounted at /fd/scratch (also the cwd)
    limits: Limits
    ro_binds: list[tuple[Path, str]] = field(default_factory=list)  # host -> sandbox path
    rw_binds: list[tuple[Path, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stdin: int | None = subprocess.DEVNULL
    # A file object (stdout and stderr reach it through a pipe, see LogPipe) or a
    # subprocess constant.
    stdout: object = subprocess.DEVNULL
    name: str = "sandbox"


# The limit each reason the host stops a sandbox for stands for.
KILLED_FOR_LIMIT = {"time": "wall_seconds", "cpu": "cpu_seconds", "memory": "memory_mb"}
# bubblewrap's own processes in the sandbox's cgroup and uid: its monitor and pid 1.
BWRAP_PROCS = 2


@dataclass
class Outcome:
    returncode: int
    killed_for: str = ""  # "", "time", "cpu", "memory": why the host stopped it
    # Limits the sandbox ran into, by limit name: how often where the host can count
    # (forks the pids cgroup refused), 1 for the limit it was stopped for.
    limit_hits: dict[str, int] = field(default_factory=dict)


@dataclass
class Launch:
    """How one sandbox is started: its command and the descriptors it inherits (the
    parent's copies are closed once it has started)."""

    argv: list[str]
    pass_fds: list[int] = field(default_factory=list)
    # Where the backend itself counts the forks it refused (gVisor's sentry), the count.
    refused_forks: Callable[[], int] | None = None

    def close_fds(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = []


class LogPipe:
    """The sandbox's stdout and stderr: a pipe, copied into the host's file by a thread,
    up to the file-size limit. Handed the file itself, the sandbox could read its host
    path at /proc/self/fd/1 (and at /proc/1/fd/1: bubblewrap's pid 1 holds it too); a
    pipe reads as `pipe:[N]`. At the limit the pipe is closed, so a further write fails
    (EPIPE), as one past RLIMIT_FSIZE did (EFBIG)."""

    def __init__(self, out, *, max_bytes: int):
        self.out, self.room = out, max_bytes - os.fstat(out.fileno()).st_size
        self.read_fd, self.write_fd = os.pipe()
        self.thread = threading.Thread(target=self._copy, name="sandbox-log", daemon=True)

    def start(self) -> None:
        os.close(self.write_fd)  # the sandbox holds the only write end now
        self.thread.start()

    def _copy(self) -> None:
        try:
            while self.room > 0 and (chunk := os.read(self.read_fd, 65536)):
                chunk = chunk[: self.room]
                self.room -= len(chunk)
                while chunk:
                    chunk = chunk[os.write(self.out.fileno(), chunk) :]
        finally:
            os.close(self.read_fd)

    def abandon(self) -> None:
        """The sandbox did not start: close both ends."""
        os.close(self.write_fd)
        os.close(self.read_fd)

    def wait(self, timeout: float = 5.0) -> None:
        # Whatever is left in the sandbox dies with it; the timeout is for a process
        # that outlives its kill (close() then holds the uid slot anyway).
        self.thread.join(timeout)


class Sandbox:
    """A started sandbox. The host kills it for wall time and (with cgroups) CPU time."""

    def __init__(
        self,
        proc,
        spec: SandboxSpec,
        cgroups: CgroupSet,
        uid_slot: UidSlot,
        backend,
        launch,
        log: LogPipe | None = None,
    ):
        self.proc, self.spec, self.cgroups, self.uid_slot = proc, spec, cgroups, uid_slot
        self.backend, self.launch, self.log = backend, launch, log
        self.started = time.monotonic()
        self.killed_for = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from a thread of its own) once the process has exited."""

        def watch():
            with contextlib.suppress(OSError):
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
            callback()

        threading.Thread(target=watch, daemon=True, name=f"exit-{self.proc.pid}").start()

    def poll(self) -> int | None:
        """None while running. Enforces wall time and the cgroup's CPU time."""
        rc = self.proc.poll()
        if rc is not None:
            return rc
        if time.monotonic() - self.started > self.spec.limits.wall_seconds:
            self.kill("time")
        cpu = self.cgroups.cpu_seconds()
        if cpu is not None and cpu > self.spec.limits.cpu_seconds + 0.5:
            self.kill("cpu")
        return None

    def wait(self, timeout: float | None = None) -> Outcome:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.spec.argv, timeout)
            time.sleep(0.01)
        return self.outcome()

    def kill(self, reason: str = "") -> None:
        if not self.killed_for:
            self.killed_for = reason
        # The launcher is a session leader: its group holds the sandbox's outer
        # process; everything inside dies with it (--die-with-parent, pid namespace).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def outcome(self) -> Outcome:
        rc = self.proc.wait()
        if self.log is not None:
            self.log.wait()  # the file holds all the sandbox wrote once this returns
        reason = self.killed_for
        if not reason and self.cgroups.oom_killed():
            reason = "memory"
        # SIGXCPU: the CPU rlimit; the sandbox reports a signal death as 128 + signal.
        if not reason and rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            reason = "cpu"
        hits = {KILLED_FOR_LIMIT[reason]: 1} if reason in KILLED_FOR_LIMIT else {}
        refused = self.cgroups.refused_forks()
        if self.launch.refused_forks is not None:
            refused += self.launch.refused_forks()
        if refused:
            hits["max_processes"] = refused
        return Outcome(returncode=rc, killed_for=reason, limit_hits=hits)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
            self.proc.wait()
        self.backend.cleanup(self)
        # If a process outlives its kill, drain raises and the uid slot stays held
        # (until this worker exits) rather than passing a busy group on.
        self.cgroups.drain()
        self.cgroups.remove()
        self.uid_slot.release()


class Backend:
    name = "base"
    sandboxed = True
    # bubblewrap: memory, and pids for its processes: the pids cgroup refuses a fork
    # first and counts the refusals (pids.events), which is how a process-limit hit is
    # recorded; the sandbox's own uid (RLIMIT_NPROC, one above) is the backstop where
    # there is no pids cgroup. RLIMIT_CPU bounds CPU time, per process, with the wall
    # time above both.
    cgroup_controllers: tuple[str, ...] = ("memory", "pids")

    @classmethod
    def available(cls) -> bool:
        raise NotImplementedError

    def wrap(self, spec: SandboxSpec, uid: int | None) -> Launch:
        """The command that confines `spec.argv`."""
        raise NotImplementedError

    def host_limits(self, limits: Limits) -> Limits:
        """The limits of the host-side cgroups (a backend with its own processes adds
        their overhead)."""
        return dataclasses.replace(limits, max_processes=limits.max_processes + BWRAP_PROCS)

    def command(self, spec: SandboxSpec, uid: int | None, cgroups: CgroupSet) -> Launch:
        # The uid switch is done by setpriv(1), not by Popen(user=...): with a uid
        # change Popen must fork() this large process instead of vfork()ing it.
        drop = []
        if uid is not None:
            drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        # One process above the pids cgroup, so the cgroup refuses (and counts) first.
        extra = BWRAP_PROCS + (1 if cgroups.has_pids else 0)
        launch = self.wrap(spec, uid)
        launch.argv = [
            *drop,
            "prlimit",
            *rlimit_args(spec.limits, memory_by_cgroup=cgroups.has_memory, extra_procs=extra),
            "--",
            # A clean environment for the confining process itself: bubblewrap's pid 1
            # keeps the environment it was started with (PWD: the worker's folder), and
            # the sandbox can read it at /proc/1/environ.
            "env",
            "-i",
            *launch.argv,
        ]
        return launch

    def cleanup(self, sandbox: Sandbox) -> None:
        """Anything of the sandbox left on the host once its process is gone."""

    def start(self, spec: SandboxSpec) -> Sandbox:
        sweep_leftovers()  # once per process: what dead workers left behind
        slot = UidSlot(
            settings.EXECUTION_SANDBOX_UID_BASE,
            settings.EXECUTION_SANDBOX_UID_COUNT,
            Path(settings.EXECUTION_WORK_DIR) / ".uid-slots",
        )
        uid = slot.acquire()
        cgroups = CgroupSet()
        launch = log = None
        try:
            if uid is not None:
                os.chown(spec.scratch, uid, uid)
            if slot.index is not None:
                name, reused = f"flightdeck-slot-{slot.index}", True
            else:
                name, reused = f"flightdeck-{spec.name}-p{os.getpid()}-{time.monotonic_ns()}", False
            cgroups = CgroupSet.create(
                name=name,
                limits=self.host_limits(spec.limits),
                controllers=self.cgroup_controllers,
                reused=reused,
            )
            launch = self.command(spec, uid, cgroups)
            # A shell joins the cgroups and execs the rest: no preexec_fn, which is
            # unsafe in this threaded worker.
            joins = "".join(f"echo $$ > {shlex.quote(str(p))} && " for p in cgroups.join_paths)
            argv = ["/bin/sh", "-c", f'{joins}exec "$@"', "sh", *launch.argv]
            stdout = spec.stdout
            if hasattr(stdout, "fileno"):
                log = LogPipe(stdout, max_bytes=spec.limits.max_file_mb * 1024 * 1024)
                stdout = log.write_fd
            proc = subprocess.Popen(
                argv,
                stdin=spec.stdin,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                close_fds=True,
                pass_fds=launch.pass_fds,
            )
        except BaseException:
            if log is not None:
                log.abandon()
            cgroups.remove()
            slot.release()
            raise
        finally:
            if launch is not None:
                launch.close_fds()
        if log is not None:
            log.start()
        return Sandbox(proc, spec, cgroups, slot, self, launch, log)
