"""The gVisor backend: the agent runs on gVisor's user-space kernel (`runsc`, ptrace
platform), from an OCI bundle written per sandbox.

The bundle's root is an empty read-only folder with /usr bound read-only and the
sandbox's folders bound where bubblewrap puts them, so agent code sees the same
layout under either backend. `--network=none` gives it no network at all (and keeps
runsc away from iptables); `--host-uds=open` lets it connect to the gateway's socket
and nothing else that is not bound in. gVisor enforces the process, file-size and
open-file rlimits itself but not RLIMIT_CPU, so CPU time is bounded from the host: the
cgroup's cpuacct (Sandbox.poll) and an RLIMIT_CPU on runsc itself as a backstop.
Memory and pids are the host cgroups around the whole sandbox, with room for gVisor's
own memory and threads.

The sentry refuses forks past RLIMIT_NPROC and keeps no count the host can read (this
release's cgroupfs has no pids controller, and its processes are not host processes).
Its strace, narrowed to the calls that create processes, logs each refusal as the call
returning EAGAIN: that log goes to a pipe a thread here reads and counts
(ForkRefusals), so it never reaches the disk, however often the agent retries.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

from django.conf import settings

from execution.sandbox.base import Backend, Launch, Sandbox, SandboxSpec
from execution.sandbox.resources import CgroupSet, Limits

SENTRY_THREADS = 512  # the Go runtime's threads of gVisor's sentry and gofer
FORK_CALLS = ("clone", "clone3", "fork", "vfork")
# A refused fork in the sentry's strace: the call's exit ("X"), failing with EAGAIN, e.g.
# `I1202 00:49:27.912575 14151 strace.go:611] [   1:   1] python3 X clone(...) = 0 (0x0)
# errno=11 (try again) (682µs)`. The task name before "X" is the agent's to choose (at
# most 15 bytes); a forged line can only raise its own run's count.
REFUSED_FORK = re.compile(rb"strace\.go:\d+\] \[ *\d+: *\d+\] .{0,16} X (?:clone3?|v?fork)\(")
EAGAIN_EXIT = re.compile(rb"\) = 0 \(0x0\) errno=11 \(")
LOG_LINE_MAX = 64 * 1024  # the sentry bounds each strace line (--strace-log-size)


class ForkRefusals:
    """Counts the forks gVisor refused, from its strace log on a pipe (see the module's
    docstring). The pipe's write end goes to runsc; reading stops at its last close."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self.count = 0
        self._reader = threading.Thread(target=self._read, name="runsc-forks", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.read_fd, "rb") as log:
            for line in iter(lambda: log.readline(LOG_LINE_MAX), b""):
                if REFUSED_FORK.search(line) and EAGAIN_EXIT.search(line):
                    self.count += 1

    def __call__(self, timeout: float = 2.0) -> int:
        # runsc has exited; its sentry closes the log as it goes. A sentry that outlives
        # a kill is deleted in cleanup(), after this: the count read by then stands.
        self._reader.join(timeout)
        return self.count


class RunscBackend(Backend):
    name = "runsc"
    # gVisor ignores RLIMIT_CPU, and its processes are not host processes: CPU time and
    # the process count are bounded from the host.
    cgroup_controllers = ("memory", "pids", "cpuacct")

    @classmethod
    def available(cls) -> bool:
        # runsc needs root here (its rootless mode needs more than this machine has).
        return shutil.which("runsc") is not None and os.geteuid() == 0

    @staticmethod
    def state_dir() -> Path:
        path = Path(settings.EXECUTION_WORK_DIR) / ".runsc-state"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def host_limits(self, limits: Limits) -> Limits:
        return Limits(
            wall_seconds=limits.wall_seconds,
            cpu_seconds=limits.cpu_seconds,
            memory_mb=limits.memory_mb + settings.EXECUTION_RUNSC_OVERHEAD_MB,
            max_processes=limits.max_processes + SENTRY_THREADS,
            max_file_mb=limits.max_file_mb,
        )

    def command(self, spec: SandboxSpec, uid: int | None, cgroups: CgroupSet) -> Launch:
        bundle = spec.scratch.parent / f".oci-{secrets.token_hex(6)}"
        container = f"fd-{spec.name}-p{os.getpid()}-{secrets.token_hex(6)}"
        self._write_bundle(bundle, spec, uid, memory_by_cgroup=cgroups.has_memory)
        spec.runsc = (container, bundle)  # for cleanup()
        cpu = int(spec.limits.cpu_seconds) + 2  # gVisor's own start-up CPU on top
        flags = ["--network=none", "--ignore-cgroups"]
        if spec.rw_binds:
            flags.append("--host-uds=open")  # to reach the gateway's socket
        forks = ForkRefusals()
        flags += [
            "--strace",
            f"--strace-syscalls={','.join(FORK_CALLS)}",
            # `run` opens the path for the sentry it starts (`boot`), in its own fd table.
            f"--debug-log=/proc/self/fd/{forks.write_fd}",
            "--debug-command=boot",
        ]
        argv = [
            "prlimit",
            f"--cpu={cpu}:{cpu + 1}",
            "--",
            "env",  # a clean environment, as for bubblewrap (base.Backend.command)
            "-i",
            shutil.which("runsc") or "runsc",
            "--root",
            str(self.state_dir()),
            *flags,
            "run",
            "--bundle",
            str(bundle),
            container,
        ]
        return Launch(argv, pass_fds=[forks.write_fd], refused_forks=forks)

    def _write_bundle(
        self, bundle: Path, spec: SandboxSpec, uid, *, memory_by_cgroup: bool
    ) -> None:
        rootfs = bundle / "rootfs"
        mounts = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},  # noqa: S108
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
        ]
        for top in ("bin", "sbin", "lib", "lib64", "lib32"):
            host = Path("/") / top
            if host.is_symlink():
                rootfs.mkdir(parents=True, exist_ok=True)
                (rootfs / top).symlink_to(os.readlink(host))
            elif host.is_dir():
                mounts.append(
                    {
                        "destination": f"/{top}",
                        "type": "bind",
                        "source": str(host),
                        "options": ["rbind", "ro"],
                    }
                )
        binds = [(spec.scratch, "/fd/scratch", "rw")]
        binds += [(host, inside, "ro") for host, inside in spec.ro_binds]
        binds += [(host, inside, "rw") for host, inside in spec.rw_binds]
        for host, inside, mode in binds:
            mounts.append(
                {
                    "destination": inside,
                    "type": "bind",
                    "source": str(host),
                    "options": ["rbind", mode],
                }
            )
        for mount in mounts:
            (rootfs / mount["destination"].lstrip("/")).mkdir(parents=True, exist_ok=True)
        limits = spec.limits
        rlimits = {
            "RLIMIT_NOFILE": 256,
            "RLIMIT_NPROC": limits.max_processes,
            "RLIMIT_FSIZE": limits.max_file_mb * 1024 * 1024,
            "RLIMIT_CORE": 0,
        }
        if not memory_by_cgroup:
            rlimits["RLIMIT_AS"] = (limits.memory_mb + 64) * 1024 * 1024
        env = {"PATH": "/usr/bin:/bin", "HOME": "/fd/scratch", **spec.env}
        config = {
            "ociVersion": "1.0.0",
            "process": {
                "terminal": False,
                "user": {"uid": uid or 0, "gid": uid or 0},
                "args": spec.argv,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": "/fd/scratch",
                "rlimits": [{"type": k, "hard": v, "soft": v} for k, v in rlimits.items()],
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "sandbox",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
            },
        }
        (bundle / "config.json").write_text(json.dumps(config))

    def cleanup(self, sandbox: Sandbox) -> None:
        container, bundle = getattr(sandbox.spec, "runsc", (None, None))
        if container:
            # A killed `runsc run` can leave its sandbox processes and state behind.
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["runsc", "--root", str(self.state_dir()), "delete", "--force", container],
                    capture_output=True,
                    timeout=10,
                )
            shutil.rmtree(bundle, ignore_errors=True)
