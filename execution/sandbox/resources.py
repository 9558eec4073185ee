"""The host-side limits of one sandbox: cgroups where the machine offers them, rlimits
otherwise, and an unprivileged host uid per sandbox.

Why a uid per sandbox: RLIMIT_NPROC counts processes per real uid and is not enforced
for root, so a fork bomb is only bounded when each sandbox is its own ordinary user.
Slots are claimed with flock on a file, so they are free again when the holder dies.
"""

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpuacct")


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 60
    cpu_seconds: int = 30
    memory_mb: int = 256
    max_processes: int = 32
    max_file_mb: int = 16

    @classmethod
    def from_dict(cls, limits: dict) -> "Limits":
        known = {k: limits[k] for k in cls.__dataclass_fields__ if k in limits}
        return cls(**known)


def _own_path(controller: str) -> str:
    """Our own cgroup in a v1 hierarchy, so sandboxes nest under the worker's group."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


@lru_cache(maxsize=1)
def cgroup_controllers() -> dict[str, Path]:
    """The v1 controllers we may create groups in, by name -> parent folder."""
    found = {}
    if os.geteuid() != 0:
        return found
    for name in CONTROLLERS:
        base = CGROUP_ROOT / name
        if not (base / "cgroup.procs").exists():
            continue
        parent = base / _own_path(name).lstrip("/")
        probe = parent / f"flightdeck-probe-{secrets.token_hex(4)}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            continue
        found[name] = parent
    return found


def _refused_forks(path: Path) -> int:
    """How many forks the pids cgroup has refused since it was made (pids.events)."""
    for line in (path / "pids.events").read_text().splitlines():
        if line.startswith("max "):
            return int(line.split()[1])
    return 0


def _oom_kills(path: Path) -> int:
    for line in (path / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


@dataclass
class CgroupSet:
    """One sandbox's groups; `join_paths` are written with the launcher's own pid.

    The groups belong to the sandbox's uid slot and are reused, not made and removed
    per sandbox: a removed memory cgroup lingers in the kernel as a dying cgroup, and
    reuse keeps their number bounded by the slots. The slot's flock makes a group
    exclusive; counters are reset (or read as a baseline) at each start.
    """

    paths: dict[str, Path] = field(default_factory=dict)
    oom_baseline: int = 0
    refused_baseline: int = 0
    reused: bool = True

    @classmethod
    def create(
        cls, *, name: str, limits: Limits, controllers=CONTROLLERS, reused: bool = True
    ) -> "CgroupSet":
        groups = cls(reused=reused)
        for controller, parent in cgroup_controllers().items():
            if controller not in controllers:
                continue
            path = parent / name
            path.mkdir(exist_ok=True)
            if controller == "memory":
                limit = str(limits.memory_mb * 1024 * 1024)
                swap = path / "memory.memsw.limit_in_bytes"
                # memsw may not be below the memory limit: lower memory first, raise
                # memsw first.
                order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
                current = int((path / "memory.limit_in_bytes").read_text())
                if int(limit) > current:
                    order.reverse()
                for knob in order:
                    if knob.startswith("memory.memsw") and not swap.exists():
                        continue  # no swap accounting: nothing to escape into
                    with contextlib.suppress(OSError):
                        (path / knob).write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.failcnt").write_text("0")
                groups.oom_baseline = _oom_kills(path)
            elif controller == "pids":
                (path / "pids.max").write_text(str(limits.max_processes))
                groups.refused_baseline = _refused_forks(path)
            elif controller == "cpuacct":
                (path / "cpuacct.usage").write_text("0")
            groups.paths[controller] = path
        return groups

    @property
    def join_paths(self) -> list[Path]:
        return [p / "cgroup.procs" for p in self.paths.values()]

    @property
    def has_memory(self) -> bool:
        return "memory" in self.paths

    @property
    def has_pids(self) -> bool:
        return "pids" in self.paths

    def refused_forks(self) -> int:
        """Forks the pids cgroup refused during this sandbox (0 without one)."""
        path = self.paths.get("pids")
        return _refused_forks(path) - self.refused_baseline if path else 0

    def oom_killed(self) -> bool:
        path = self.paths.get("memory")
        return bool(path) and _oom_kills(path) > self.oom_baseline

    def cpu_seconds(self) -> float | None:
        path = self.paths.get("cpuacct")
        if not path:
            return None
        return int((path / "cpuacct.usage").read_text()) / 1e9

    def drain(self, timeout: float = 2.0) -> None:
        """Kill whatever is left in the groups and wait until they are empty.

        The launcher can be reaped while the sandbox's pid 1 is still exiting (it dies
        with its parent, asynchronously); a reused group must be empty before the slot
        passes to the next sandbox, and a group must be empty to be removed.
        """
        deadline = time.monotonic() + timeout
        for path in self.paths.values():
            procs = path / "cgroup.procs"
            while pids := procs.read_text().split():
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sandbox processes {pids} outlived their kill")
                time.sleep(0.002)

    def remove(self) -> None:
        if self.reused:
            return  # the slot's; kept for its next sandbox
        for path in self.paths.values():
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()  # drained: empty


class UidSlot:
    """An unprivileged host uid held for the life of one sandbox."""

    def __init__(self, base: int, count: int, lock_dir: Path):
        self.base, self.count, self.lock_dir = base, count, lock_dir
        self.uid: int | None = None
        self.index: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> "UidSlot":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> int | None:
        if os.geteuid() != 0:
            return None  # not root: we cannot switch users, the sandbox runs as us
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        start = secrets.randbelow(self.count)  # spread, so slots are rarely contended
        for i in range(self.count):
            slot = (start + i) % self.count
            fd = os.open(self.lock_dir / f"slot-{slot}", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd, self.uid, self.index = fd, self.base + slot, slot
            return self.uid
        raise RuntimeError("no free sandbox uid slot")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self.uid = None, None


def rlimit_args(limits: Limits, *, memory_by_cgroup: bool, extra_procs: int = 0) -> list[str]:
    """prlimit(1) options. The CPU hard limit is one second above the soft one, so the
    process gets SIGXCPU (recognisable) before SIGKILL. `extra_procs`: the sandbox's
    own processes under the same uid (bubblewrap's monitor and its pid 1)."""
    cpu = max(1, int(limits.cpu_seconds))
    args = [
        f"--cpu={cpu}:{cpu + 1}",
        f"--nproc={limits.max_processes + extra_procs}",
        f"--fsize={limits.max_file_mb * 1024 * 1024}",
        "--nofile=256",
        "--core=0",
    ]
    if not memory_by_cgroup:
        # Without a memory cgroup, the address space is the bound (a MemoryError, not
        # a kill), with room for the interpreter's own mappings.
        args.append(f"--as={(limits.memory_mb + 64) * 1024 * 1024}")
    return args


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
