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


@dataclass
class CgroupSet:
    """One sandbox's groups; `join_paths` are written with the launcher's own pid."""

    paths: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, *, name: str, limits: Limits) -> "CgroupSet":
        groups = cls()
        for controller, parent in cgroup_controllers().items():
            path = parent / name
            path.mkdir(exist_ok=True)
            if controller == "memory":
                limit = str(limits.memory_mb * 1024 * 1024)
                (path / "memory.limit_in_bytes").write_text(limit)
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():  # no escape into swap
                    with contextlib.suppress(OSError):
                        swap.write_text(limit)
            elif controller == "pids":
                (path / "pids.max").write_text(str(limits.max_processes))
            groups.paths[controller] = path
        return groups

    @property
    def join_paths(self) -> list[Path]:
        return [p / "cgroup.procs" for p in self.paths.values()]

    @property
    def has_memory(self) -> bool:
        return "memory" in self.paths

    def oom_killed(self) -> bool:
        path = self.paths.get("memory")
        if not path:
            return False
        for line in (path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1]) > 0
        return int((path / "memory.failcnt").read_text()) > 0

    def cpu_seconds(self) -> float | None:
        path = self.paths.get("cpuacct")
        if not path:
            return None
        return int((path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        for path in self.paths.values():
            # A group can only be removed once empty; the caller has killed everything.
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    import time

                    time.sleep(0.01)


class UidSlot:
    """An unprivileged host uid held for the life of one sandbox."""

    def __init__(self, base: int, count: int, lock_dir: Path):
        self.base, self.count, self.lock_dir = base, count, lock_dir
        self.uid: int | None = None
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
            self._fd, self.uid = fd, self.base + slot
            return self.uid
        raise RuntimeError("no free sandbox uid slot")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self.uid = None, None


def rlimit_args(limits: Limits, *, memory_by_cgroup: bool, extra_procs: int = 0) -> list[str]:
    """prlimit(1) options. The CPU hard limit is one second above the soft one, so the
    process gets SIGXCPU (recognisable) before SIGKILL."""
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
