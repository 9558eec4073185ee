"""The `python` tool: the agent's code runs in a fresh sandbox of its own, with no
socket, no network and tight limits; its output comes back as the result."""

import os
import secrets
from pathlib import Path

from django.conf import settings

from execution.retry import UpstreamError
from execution.sandbox import SANDBOX_PYTHON, SandboxSpec, get_backend
from execution.sandbox.resources import Limits, remove_tree

PYTHON_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "maxLength": 100_000}},
    "required": ["code"],
    "additionalProperties": False,
}
MAX_OUTPUT = 64 * 1024


def python_run(arguments: dict, spec, idempotency_key: str = "") -> dict:
    work_root = Path(settings.EXECUTION_WORK_DIR)
    work_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    folder = work_root / f"tool-p{os.getpid()}-{secrets.token_hex(8)}"
    scratch = folder / "scratch"
    scratch.mkdir(parents=True, mode=0o700)
    folder.chmod(0o711)
    try:
        (scratch / "main.py").write_text(arguments["code"])
        limits = Limits.from_dict(
            {**settings.EXECUTION_PYTHON_TOOL_LIMITS, "wall_seconds": spec.timeout}
        )
        # The sandbox's stdout and stderr reach this file through one pipe (base.LogPipe).
        with open(folder / "output", "a+b") as out:
            box = get_backend().start(
                SandboxSpec(
                    argv=[
                        SANDBOX_PYTHON,
                        "-S",
                        "-I",
                        "-u",
                        "/fd/scratch/main.py",
                    ],  # -u: output in order
                    scratch=scratch,
                    limits=limits,
                    stdout=out,
                    name="tool",
                )
            )
            try:
                outcome = box.wait()
            finally:
                box.close()
            out.seek(0)
            output = out.read(MAX_OUTPUT + 1)
    finally:
        remove_tree(folder)
    if outcome.killed_for == "time":
        raise UpstreamError(f"the code ran past {spec.timeout:g} s", retryable=False)
    return {
        "exit_code": outcome.returncode,
        "output": output[:MAX_OUTPUT].decode(errors="replace"),
        "truncated": len(output) > MAX_OUTPUT,
        "stopped_for": outcome.killed_for,
    }
