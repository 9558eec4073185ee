"""Cleans up after workers that died mid-run (SIGKILL, OOM, a lost machine is another
matter): their run folders, cgroups and gVisor containers stay behind. Every such
name carries the creating process's pid; once per worker process, whatever belongs to
a pid that no longer exists is removed."""

import contextlib
import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from execution.sandbox.resources import cgroup_controllers

_PID = re.compile(r"-p(\d+)-")


def owner_alive(name: str) -> bool:
    match = _PID.search(name)
    if not match:
        return True  # not ours to judge
    pid = int(match.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@lru_cache(maxsize=1)
def sweep_leftovers() -> int:
    removed = 0
    for parent in cgroup_controllers().values():
        for group in parent.glob("flightdeck-*"):
            if not owner_alive(group.name):
                with contextlib.suppress(OSError):
                    group.rmdir()  # only succeeds once empty
                    removed += 1
    work = Path(settings.EXECUTION_WORK_DIR)
    for folder in list(work.glob("run-*")) + list(work.glob("tool-*")):
        if not owner_alive(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    state = work / ".runsc-state"
    if state.is_dir() and shutil.which("runsc"):
        for entry in state.iterdir():
            if entry.name.startswith("fd-") and not owner_alive(entry.name):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(
                        [
                            "runsc",
                            "--root",
                            str(state),
                            "delete",
                            "--force",
                            entry.name.split(".")[0],
                        ],
                        capture_output=True,
                        timeout=10,
                    )
    return removed
