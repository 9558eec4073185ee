"""Memory of the embedded default as a user gets it: `make run` in a fresh copy.

The figure is the proportional set size (PSS, from /proc/<pid>/smaps_rollup) summed over
every process `make run` leaves running (make, honcho and what the Procfile starts):
pages shared by a fork are split between the processes that share them, so the sum is
what the tree costs the machine. Read twice:

1. idle after start: the example runs `make run` queues have finished, then 10 s quiet;
2. after the ingest benchmark's load (bench/ingest.py's agent traces, 200 x 10 steps and
   50 x 40, English prose and code, two clients) has been searchable for 10 s. The
   40-step requests are about 14 MB each, near the 16 MB ingest limit: the large
   requests that leave an allocator holding memory it no longer uses.

Targets (issue #20): under 400 MB idle, under 700 MB after the ingest benchmark.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import ingest  # noqa: E402
from bench.common import ROOT, free_port  # noqa: E402

IDLE_SECONDS = 10


def fresh_copy(source: Path, dest: Path) -> None:
    """The checkout's tracked and new files, as a user's clone has them (no var/)."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        src = source / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
            target.chmod(src.stat().st_mode)


def tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0  # gone meanwhile
    return int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1))


def command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    return " ".join(Path(words[0]).name.split() + words[1:4])[:70] if words else "?"


def reading(label: str, root: int) -> int:
    rows = sorted(((pss_kb(p), p) for p in tree(root)), reverse=True)
    total = sum(kb for kb, _ in rows)
    python = sum(1 for _, p in rows if "python" in Path(f"/proc/{p}/exe").resolve().name)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"{label}: {total / 1024:.0f} MB PSS, {len(rows)} processes ({python} Python), load {load}"
    )
    for kb, pid in rows:
        print(f"    {kb / 1024:7.1f} MB  {command(pid)}")
    return total


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} not after {timeout} s")


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="fd-footprint-"))
    # FOOTPRINT_CHECKOUT measures another checkout (an older commit's work tree, to compare).
    fresh_copy(Path(os.environ.get("FOOTPRINT_CHECKOUT", ROOT)), folder)
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PORT": str(port),
        "LLM_PORT": str(free_port()),
        "OTLP_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "VENV": str(Path(sys.prefix)),
    }
    log = open(folder / "make-run.log", "w+")  # noqa: SIM115 - read while it runs
    proc = subprocess.Popen(
        ["make", "run"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    output = lambda: (folder / "make-run.log").read_text()  # noqa: E731
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:

            def serving() -> bool:
                try:
                    return client.get("/api/v1/health").status_code == 200
                except httpx.TransportError:
                    return False

            # The web server starts after the demo tenant and its example runs exist.
            wait_for(serving, 300, "make run's web server")
            key = re.search(r"^api key: (fd_\S+)$", output(), re.M).group(1)
            auth = {"Authorization": f"Bearer {key}"}
            runs = re.findall(r"Queued example run (\d+)", output())

            def runs_done() -> bool:
                try:
                    return all(
                        client.get(f"/api/v1/runs/{r}", headers=auth).json()["status"]
                        in ("succeeded", "failed", "stopped")
                        for r in runs
                    )
                except (httpx.TransportError, ValueError, KeyError):
                    return False

            wait_for(runs_done, 300, "the example runs")
            print(f"{len(runs)} example runs finished")
            time.sleep(IDLE_SECONDS)
            idle = reading("idle after start", proc.pid)

            for traces, steps in ((200, 10), (50, 40)):
                bodies, total, markers = ingest.requests_for(traces, steps, tag=f"fp{steps}")
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=2) as pool:
                    send = lambda body: client.post(  # noqa: E731
                        "/v1/traces", content=body, headers=ingest._headers(key)
                    )
                    for resp in pool.map(send, bodies):
                        resp.raise_for_status()
                ingest.wait_searchable(client, key, markers)
                took = time.perf_counter() - started
                print(f"ingest {traces}x{steps}: {total} spans searchable in {took:.1f} s")
            time.sleep(IDLE_SECONDS)
            after = reading("after the ingest benchmark", proc.pid)

        print(
            f"total PSS: idle {idle / 1024:.0f} MB (target < 400), after ingest "
            f"{after / 1024:.0f} MB (target < 700)"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    main()
