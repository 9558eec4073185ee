"""Sandbox backends: where agent code (and the `python` tool's code) runs.

Every backend gives the process no network, a read-only system, one writable scratch
folder, the read-only folders it is handed, and nothing else of the host; and bounds its
CPU time, wall time, memory, processes and file size (resources.py).

    backend = get_backend()                  # settings.EXECUTION_SANDBOX: auto|runsc|bwrap|unsandboxed
    box = backend.start(SandboxSpec(...))    # -> Sandbox: poll(), kill(), outcome()

base.py holds what the backends share (the spec, the started Sandbox, Backend.start);
bubblewrap and the development backend are here, gVisor in runsc.py.
"""

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from execution.sandbox.base import (
    SANDBOX_PYTHON,
    Backend,
    Launch,
    Outcome,
    Sandbox,
    SandboxSpec,
)
from execution.sandbox.runsc import RunscBackend

__all__ = [
    "BACKENDS",
    "SANDBOX_PYTHON",
    "Backend",
    "BubblewrapBackend",
    "Launch",
    "Outcome",
    "RunscBackend",
    "Sandbox",
    "SandboxSpec",
    "UnsandboxedBackend",
    "backend_class",
    "get_backend",
]


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

    def wrap(self, spec: SandboxSpec, uid: int | None) -> Launch:
        args = [
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
        # The options go through a descriptor (--args), not the command line: the
        # sandbox's pid 1 is bubblewrap itself, and its /proc/1/cmdline would name the
        # run's folder and every bind. bubblewrap closes the descriptor once read.
        options = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
        os.write(options, b"".join(arg.encode() + b"\0" for arg in args))
        os.lseek(options, 0, os.SEEK_SET)
        bwrap = shutil.which("bwrap") or "bwrap"  # by path: it is started with no PATH
        return Launch([bwrap, "--args", str(options), "--", *spec.argv], pass_fds=[options])


class UnsandboxedBackend(Backend):
    """Development only (no bubblewrap): rlimits and a clean environment, no isolation.
    Settings refuse it with DEBUG off."""

    name = "unsandboxed"
    sandboxed = False

    @classmethod
    def available(cls) -> bool:
        return True

    def wrap(self, spec: SandboxSpec, uid: int | None) -> Launch:
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
        return Launch(
            [
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
        )


BACKENDS = {"bwrap": BubblewrapBackend, "runsc": RunscBackend, "unsandboxed": UnsandboxedBackend}


def backend_class(name: str):
    if name == "auto":
        if RunscBackend.available():
            return RunscBackend
        if BubblewrapBackend.available():
            return BubblewrapBackend
        raise ImproperlyConfigured(
            "no sandbox is installed: install bubblewrap (apt-get install bubblewrap) or gVisor"
        )
    if name not in BACKENDS:
        raise ImproperlyConfigured(
            f"EXECUTION_SANDBOX={name!r} is not one of auto, {', '.join(BACKENDS)}"
        )
    cls = BACKENDS[name]
    if not cls.sandboxed and not settings.DEBUG:
        raise ImproperlyConfigured("EXECUTION_SANDBOX=unsandboxed is refused with DEBUG off")
    if not cls.available():
        raise ImproperlyConfigured(f"sandbox backend {name!r} is not installed on this machine")
    return cls


def get_backend(name: str | None = None) -> Backend:
    return backend_class(name or settings.EXECUTION_SANDBOX)()
