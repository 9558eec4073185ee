"""Sandbox backends: where agent code (and the `python` tool's code) runs.

Every backend gives the process no network, a read-only system, one writable scratch
folder, the read-only folders it is handed, and nothing else of the host; and bounds its
CPU time, wall time, memory, processes and file size (resources.py).

    backend = get_backend()                  # settings.EXECUTION_SANDBOX: auto|runsc|bwrap|unsandboxed
    box = backend.start(SandboxSpec(...))    # -> Sandbox: poll(), kill(), outcome()
"""

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from execution.sandbox.resources import CgroupSet, Limits, UidSlot, rlimit_args

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
    stdout: object = subprocess.DEVNULL  # a file object or subprocess constant
    name: str = "sandbox"


@dataclass
class Outcome:
    returncode: int
    killed_for: str = ""  # "", "time", "cpu", "memory": why the host stopped it


class Sandbox:
    """A started sandbox. The host kills it for wall time and (with cgroups) CPU time."""

    def __init__(self, proc, spec: SandboxSpec, cgroups: CgroupSet, uid_slot: UidSlot, backend):
        self.proc, self.spec, self.cgroups, self.uid_slot = proc, spec, cgroups, uid_slot
        self.backend = backend
        self.started = time.monotonic()
        self.killed_for = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

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
        reason = self.killed_for
        if not reason and self.cgroups.oom_killed():
            reason = "memory"
        # SIGXCPU: the CPU rlimit; the sandbox reports a signal death as 128 + signal.
        if not reason and rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            reason = "cpu"
        return Outcome(returncode=rc, killed_for=reason)

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
    # bubblewrap needs only the memory controller: the sandbox's own uid bounds its
    # processes (RLIMIT_NPROC) and RLIMIT_CPU its CPU time, per process, with the wall
    # time above both; fewer groups to set up and join on every start.
    cgroup_controllers: tuple[str, ...] = ("memory",)

    @classmethod
    def available(cls) -> bool:
        raise NotImplementedError

    def wrap(self, spec: SandboxSpec, uid: int | None) -> list[str]:
        """The command that confines `spec.argv`."""
        raise NotImplementedError

    def host_limits(self, limits: Limits) -> Limits:
        """The limits of the host-side cgroups (a backend with its own processes adds
        their overhead)."""
        return limits

    def command(self, spec: SandboxSpec, uid: int | None, cgroups: CgroupSet) -> list[str]:
        # The uid switch is done by setpriv(1), not by Popen(user=...): with a uid
        # change Popen must fork() this large process instead of vfork()ing it.
        drop = []
        if uid is not None:
            drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        return [
            *drop,
            "prlimit",
            *rlimit_args(spec.limits, memory_by_cgroup=cgroups.has_memory, extra_procs=2),
            "--",
            *self.wrap(spec, uid),
        ]

    def cleanup(self, sandbox: Sandbox) -> None:
        """Anything of the sandbox left on the host once its process is gone."""

    def start(self, spec: SandboxSpec) -> Sandbox:
        from execution.sandbox.sweep import sweep_leftovers

        sweep_leftovers()  # once per process: what dead workers left behind
        slot = UidSlot(
            settings.EXECUTION_SANDBOX_UID_BASE,
            settings.EXECUTION_SANDBOX_UID_COUNT,
            Path(settings.EXECUTION_WORK_DIR) / ".uid-slots",
        )
        uid = slot.acquire()
        cgroups = CgroupSet()
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
            inner = self.command(spec, uid, cgroups)
            # A shell joins the cgroups and execs the rest: no preexec_fn, which is
            # unsafe in this threaded worker.
            joins = "".join(f"echo $$ > {shlex.quote(str(p))} && " for p in cgroups.join_paths)
            argv = ["/bin/sh", "-c", f'{joins}exec "$@"', "sh", *inner]
            proc = subprocess.Popen(
                argv,
                stdin=spec.stdin,
                stdout=spec.stdout,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            cgroups.remove()
            slot.release()
            raise
        return Sandbox(proc, spec, cgroups, slot, self)


def _system_binds() -> list[str]:
    """The read-only system: /usr, and the merged-/usr links (or folders) beside it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    return args


class BubblewrapBackend(Backend):
    name = "bwrap"

    @classmethod
    def available(cls) -> bool:
        return shutil.which("bwrap") is not None

    def wrap(self, spec: SandboxSpec, uid: int | None) -> list[str]:
        args = [
            "bwrap",
            "--unshare-all",  # network, pid, ipc, uts, user, cgroup
            "--die-with-parent",
            "--new-session",  # no TIOCSTI into the host's terminal
            "--cap-drop",
            "ALL",
            *_system_binds(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",  # noqa: S108 - the sandbox's own, empty /tmp
            "--hostname",
            "sandbox",
            "--bind",
            str(spec.scratch),
            "/fd/scratch",
        ]
        for host, inside in spec.ro_binds:
            args += ["--ro-bind", str(host), inside]
        for host, inside in spec.rw_binds:
            args += ["--bind", str(host), inside]
        args += ["--chdir", "/fd/scratch", "--clearenv"]
        for key, value in {"PATH": "/usr/bin:/bin", "HOME": "/fd/scratch", **spec.env}.items():
            args += ["--setenv", key, value]
        return [*args, "--", *spec.argv]


class UnsandboxedBackend(Backend):
    """Development only (no bubblewrap): rlimits and a clean environment, no isolation.
    Settings refuse it with DEBUG off."""

    name = "unsandboxed"
    sandboxed = False

    @classmethod
    def available(cls) -> bool:
        return True

    def wrap(self, spec: SandboxSpec, uid: int | None) -> list[str]:
        # Paths inside the sandbox (/fd/...) do not exist here: map them back.
        mapping = {"/fd/scratch": str(spec.scratch)}
        mapping.update({inside: str(host) for host, inside in spec.ro_binds + spec.rw_binds})

        def local(value: str) -> str:
            for inside, host in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
                if value.startswith(inside):
                    return host + value[len(inside) :]
            return value

        env = [f"{k}={local(v)}" for k, v in {"HOME": str(spec.scratch), **spec.env}.items()]
        argv = [local(a) for a in spec.argv]
        return [
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            *env,
            "sh",
            "-c",
            'cd "$0" && exec "$@"',
            str(spec.scratch),
            *argv,
        ]


def _runsc():
    from execution.sandbox.runsc import RunscBackend

    return RunscBackend


BACKENDS = {
    "bwrap": lambda: BubblewrapBackend,
    "runsc": _runsc,
    "unsandboxed": lambda: UnsandboxedBackend,
}


def backend_class(name: str):
    if name == "auto":
        if _runsc().available():
            return _runsc()
        if BubblewrapBackend.available():
            return BubblewrapBackend
        raise ImproperlyConfigured(
            "no sandbox is installed: install bubblewrap (apt-get install bubblewrap) or gVisor"
        )
    if name not in BACKENDS:
        raise ImproperlyConfigured(
            f"EXECUTION_SANDBOX={name!r} is not one of auto, {', '.join(BACKENDS)}"
        )
    cls = BACKENDS[name]()
    if not cls.sandboxed and not settings.DEBUG:
        raise ImproperlyConfigured("EXECUTION_SANDBOX=unsandboxed is refused with DEBUG off")
    if not cls.available():
        raise ImproperlyConfigured(f"sandbox backend {name!r} is not installed on this machine")
    return cls


def get_backend(name: str | None = None) -> Backend:
    return backend_class(name or settings.EXECUTION_SANDBOX)()
