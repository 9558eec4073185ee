"""Runs one claimed run on this worker: unpack the bundle, start the gateway and the
sandbox, supervise (limits, cancel, lease), and record how it ended.

Ownership is the lease on the run's row, not the broker's message: a thread of the
supervisor (LeaseKeeper) renews it from the claim on, and the supervisor writes the
outcome only while it still holds it.
A worker that dies stops renewing; its message comes back (acks late, rejected on
worker loss) and the next claim takes the run over once the lease has run out, or at
once when the owner was a process of this host that is gone; `requeue_lost_runs` (beat)
re-enqueues what no delivery took up (services.run_claim).
"""

import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

from controlplane.tenancy import tenant_scope
from execution import selectors, services
from execution.budget import BudgetRefused, budget_hook
from execution.bundles import BundleError, bundle_unpack
from execution.gateway import LEASE_LOST, Gateway, gateway_listen
from execution.models import Run, RunStatus, StopReason
from execution.sandbox import SANDBOX_PYTHON, SandboxSpec, get_backend
from execution.sandbox.resources import Limits, remove_tree
from execution.spans import RunTracer
from replay.selectors import run_link_of

log = logging.getLogger(__name__)
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
LOG_TAIL = 8192
MAX_OUTPUT_BYTES = 1024 * 1024
FINISH_GRACE_SECONDS = 2.0
# How often the supervisor looks at what does not wake it: the sandbox's wall and CPU
# time (CPU has half a second of slack, and RLIMIT_CPU behind it).
CHECK_SECONDS = 0.05
# The limit behind each stop reason.
STOP_LIMITS = {
    StopReason.TIME: "wall_seconds",
    StopReason.CPU: "cpu_seconds",
    StopReason.MEMORY: "memory_mb",
    StopReason.STEPS: "max_steps",
    StopReason.TOOL_CALLS: "max_tool_calls",
    StopReason.BUDGET: "budget",  # the token budget, or a spend cap billing holds
    StopReason.LOOP: "loop_repeats",
}


def run_dirs(run_id: int) -> Path:
    root = Path(settings.EXECUTION_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # sandbox uids pass through; nobody lists the runs
    # The pid in the name lets sandbox/sweep.py clear a dead worker's folder.
    folder = root / f"run-{run_id}-p{os.getpid()}-{secrets.token_hex(8)}"
    for sub in ("bundle", "runtime", "scratch", "sock"):
        (folder / sub).mkdir(parents=True)
    folder.chmod(0o711)
    # A copy, not a bind of the checkout: the sandbox's uid may not reach the project.
    shutil.copyfile(RUNTIME_DIR / "fdrt.py", folder / "runtime" / "fdrt.py")
    (folder / "runtime" / "fdrt.py").chmod(0o644)
    for sub in ("bundle", "runtime"):
        (folder / sub).chmod(0o755)
    (folder / "sock").chmod(0o755)
    (folder / "scratch").chmod(0o700)
    return folder


class LeaseKeeper:
    """Renews the run's lease each second, from the claim to the outcome, on a thread
    of its own with its own database connection.

    Renewed by the supervisor's loop, the lease waited behind the bundle's unpacking,
    the sandbox's start and each second's journal, span and budget flushes: on a
    loaded machine these took longer than the lease, another worker took over a run
    whose owner was alive, and both ran it, their journals racing for the same steps.
    The lease now says only that this process is alive; the supervisor's loop acts on
    what a renewal found (`state`).
    """

    def __init__(self, *, run: Run, worker_id: str):
        self.run, self.worker_id = run, worker_id
        self.counters: Callable[[], dict] = dict  # the gateway's, once it has started
        self.state = "ok"  # "lost" once another worker has the run, or why it should stop
        self.on_change: Callable[[], None] = lambda: None  # wakes the supervisor
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"lease-{run.pk}")

    def start(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def stop(self, *, wait: bool = True) -> None:
        self._done.set()
        if wait and self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        every = min(settings.EXECUTION_LEASE_SECONDS / 3, 1.0)
        try:
            with tenant_scope(self.run.tenant_id):
                while self.state != "lost" and not self._done.wait(every):
                    state = self._renew()
                    if state != self.state:
                        self.state = state
                        self.on_change()
        finally:
            connection.close()  # this thread's

    def _renew(self) -> str:
        try:
            if not services.run_lease_renew(
                run_id=self.run.pk, worker_id=self.worker_id, counters=self.counters()
            ):
                return "lost"
            return selectors.run_stop_wanted(run_id=self.run.pk) or "ok"
        except Exception:  # noqa: BLE001 - the database away: try again in a second
            log.exception("run %s: the lease could not be renewed", self.run.pk)
            connection.close()  # reconnect at the next renewal
            return self.state


class Supervisor:
    def __init__(self, *, run: Run, worker_id: str):
        self.run, self.worker_id = run, worker_id
        self.lease = LeaseKeeper(run=run, worker_id=worker_id)

    def execute(self) -> None:
        self.lease.start()
        folder = None
        try:
            folder = run_dirs(self.run.pk)
            self._execute(folder)
        finally:
            self.lease.stop()
            if folder is not None:
                # After the outcome: nothing reads the run's folder once its sandbox is
                # closed, and what a dead worker leaves, sandbox/sweep.py clears.
                remove_tree(folder)

    def _execute(self, folder: Path) -> None:
        run = self.run
        manifest = run.version.manifest
        link = run_link_of(run_id=run.pk)
        tracer = RunTracer(
            tenant_id=run.tenant_id,
            run_id=run.pk,
            agent_name=run.agent.name,
            trace_id=run.trace_id,
            source_trace_id=link.source.trace_id if link is not None else "",
        )
        if not run.trace_id:
            services.run_trace_set(run=run, trace_id=tracer.trace_id)
        if link is not None:  # the trace says which run it replays or forks
            tracer.root.set_attribute("flightdeck.replay.kind", link.kind)
            tracer.root.set_attribute("flightdeck.replay.source_run", str(link.source_id))
            tracer.root.set_attribute("flightdeck.replay.source_trace", link.source.trace_id)
        if run.attempts > 1:
            now = time.time_ns()
            # In the run's trace: where its worker was lost and it was taken up again.
            tracer.record(
                "resume",
                start_ns=now,
                end_ns=now,
                attributes={
                    "flightdeck.resume.attempt": run.attempts,
                    "flightdeck.resume.worker": self.worker_id,
                },
            )
        gateway = box = sandbox_hold = server = budget = None
        lost = False
        cpu_used = 0.0
        status, reason, error, output, logs = RunStatus.FAILED, "", "", None, ""
        hits: dict[str, int] = {}
        try:
            bundle_unpack(
                tenant_id=run.tenant_id,
                sha256=run.version.bundle_sha256,
                fmt=run.version.bundle_format,
                dest=folder / "bundle",
            )
            socket_path = folder / "sock" / "gw.sock"
            server = gateway_listen(socket_path)
            budget = budget_hook()
            if budget is not None:
                if run.attempts > 1:  # what the lost worker left held, settled or given back
                    budget.reconcile(run_id=run.pk)
                # The sandbox's CPU time is held like a call: its limit at the CPU price.
                sandbox_hold = budget.reserve(
                    run_id=run.pk,
                    kind="sandbox",
                    request={"cpu_seconds": run.limits["cpu_seconds"]},
                )
            # The sandbox writes it through a pipe (base.LogPipe), up to max_file_mb.
            with open(folder / "agent.log", "a+b") as agent_log:
                box = get_backend().start(
                    SandboxSpec(
                        argv=[SANDBOX_PYTHON, "-S", "-I", "/fd/runtime/fdrt.py"],
                        scratch=folder / "scratch",
                        limits=Limits.from_dict(run.limits),
                        ro_binds=[
                            (folder / "runtime", "/fd/runtime"),
                            (folder / "bundle", "/fd/bundle"),
                        ],
                        rw_binds=[(folder / "sock", "/fd/sock")],
                        env={
                            "FD_SOCKET": "/fd/sock/gw.sock",
                            "FD_BUNDLE": "/fd/bundle",
                            "PYTHONUNBUFFERED": "1",
                        },
                        stdout=agent_log,
                        name=f"run{run.pk}",
                    )
                )
                # The sandbox boots (tens of milliseconds) while the journals, and a
                # replay's source conversations, are read: its connection waits in the
                # listening socket's backlog meanwhile.
                gateway = Gateway(
                    run=run,
                    manifest=manifest,
                    limits=run.limits,
                    tracer=tracer,
                    socket_path=socket_path,
                    budget=budget,
                )
                if gateway.journal.source is not None:
                    gateway.journal.source.open_results()
                tracer.preload()
                gateway.start(server)
                self.lease.counters = gateway.counters
                if not self._supervise(box, gateway, tracer):
                    lost = True
                    return  # the lease was lost: another worker owns the run now
                outcome = box.outcome()
                agent_log.seek(max(0, agent_log.seek(0, 2) - LOG_TAIL))
                logs = agent_log.read().decode(errors="replace")
            status, reason, error, output = self._verdict(gateway, outcome, logs)
            hits = dict(outcome.limit_hits)
        except BundleError as exc:
            error = f"the bundle cannot be used: {exc}"
        except BudgetRefused as exc:
            status, reason, error = RunStatus.STOPPED, StopReason.BUDGET, str(exc)
        except Exception as exc:
            log.exception("run %s failed on the host side", run.pk)
            error = f"the platform failed to run the agent: {type(exc).__name__}: {exc}"
        finally:
            if gateway is not None:
                gateway.close()
                if not lost:
                    gateway.journal_flush()
            elif server is not None:
                server.close()
            if box is not None:
                cpu_used = _cpu_seconds(box)
                box.close()
            if sandbox_hold is not None:
                budget.settle(reservation=sandbox_hold, usage={"cpu_seconds": cpu_used})
            if budget is not None:
                budget.flush()  # the run's cost is whole before its outcome is
        if reason in STOP_LIMITS:
            hits.setdefault(STOP_LIMITS[reason], 1)
        tracer.limits_hit(hits, limits=run.limits)
        tracer.finish(status=status, error=error)
        counters = gateway.counters() if gateway is not None else {}
        # No renewal after this one's counters; one still under way is not waited for:
        # written after the outcome, it finds the run no longer running and writes
        # nothing (run_lease_renew). execute() joins the thread once the outcome is in.
        self.lease.stop(wait=False)
        self._finish(
            status=status,
            reason=reason,
            error=error,
            output=output,
            logs=logs,
            counters=counters,
            limit_hits=hits,
        )

    def _supervise(self, box, gateway: Gateway, tracer: RunTracer) -> bool:
        """Wait for the sandbox; False when this worker lost the run's lease.

        Woken by what it acts on (the sandbox's exit, the agent's finish, a stop, the
        lease's news), not by a period: a replay lasts a fraction of a second, and
        each wait of a polling loop was added to it. The timeout is for the limits
        the host checks itself (wall and CPU time) and the periodic flushes."""
        flush_every = min(settings.EXECUTION_LEASE_SECONDS / 3, 1.0)
        wake = gateway.changed
        box.on_exit(wake.set)
        self.lease.on_change = wake.set
        last_flush = time.monotonic()
        finished_at = None
        while box.poll() is None:
            if self.lease.state == "lost" or gateway.stop_reason == LEASE_LOST:
                box.kill()
                gateway.stop(LEASE_LOST)
                return False
            if gateway.stop_reason:
                box.kill(gateway.stop_reason)
                break
            now = time.monotonic()
            if gateway.finished is not None and finished_at is None:
                finished_at = now
                # The agent's answers are all in: their rows are written while its
                # interpreter exits. Its spans wait for the root span's, one batch:
                # ingest costs about as much a batch as the exit takes.
                gateway.journal_flush()
                continue
            if finished_at is not None and now - finished_at > FINISH_GRACE_SECONDS:
                box.kill()  # finished, but left threads or children behind
                break
            state = self.lease.state
            if state not in ("ok", "lost"):  # cancelled, or stopped by an alert rule
                gateway.stop(state)
                continue
            if now - last_flush >= flush_every:
                last_flush = now
                gateway.journal_flush()
                tracer.flush()
                self._budget_flush(gateway)
            timeout = CHECK_SECONDS
            if finished_at is not None:
                timeout = min(timeout, max(0.0, finished_at + FINISH_GRACE_SECONDS - now))
            wake.wait(timeout)
            wake.clear()  # everything it could mean is checked at the loop's top
        return True

    def _budget_flush(self, gateway: Gateway) -> None:
        # The hook keeps what it could not write for its next flush.
        if gateway.budget is None:
            return
        try:
            gateway.budget.flush()
        except Exception:  # noqa: BLE001 - logged; written at the next flush or the end
            log.exception("run %s: the budget hook could not flush", self.run.pk)

    def _verdict(self, gateway: Gateway, outcome, logs: str):
        if gateway.diverged is not None:
            report = gateway.diverged
            return (
                RunStatus.DIVERGED,
                "",
                f"diverged from run {gateway.journal.source.link.source_id} at step "
                f"{report['step']}: a call the source did not make",
                None,
            )
        if gateway.awaiting is not None:
            return (
                RunStatus.NEEDS_RECONCILIATION,
                "",
                f"a call of a tool that is not idempotent was in doubt after a crash "
                f"(idempotency key {gateway.awaiting.idempotency_key(self.run.pk)}): "
                "supply its result, retry it or fail the run",
                None,
            )
        if gateway.stop_reason:
            return RunStatus.STOPPED, gateway.stop_reason, "", None
        if outcome.killed_for in ("time", "cpu", "memory"):
            return RunStatus.STOPPED, outcome.killed_for, "", None
        finished = gateway.finished
        if finished is None:
            return (
                RunStatus.FAILED,
                "",
                f"the agent exited with code {outcome.returncode} before finishing: {logs[-1000:]}",
                None,
            )
        if finished.get("error"):
            if finished.get("error_type") == "MemoryError":
                return RunStatus.STOPPED, StopReason.MEMORY, finished["error"][-2000:], None
            return RunStatus.FAILED, "", str(finished["error"])[-4000:], None
        output = finished.get("output")
        import json

        if len(json.dumps(output, default=str)) > MAX_OUTPUT_BYTES:
            return RunStatus.FAILED, "", f"the output is over {MAX_OUTPUT_BYTES} bytes", None
        return RunStatus.SUCCEEDED, "", "", output

    def _finish(self, **outcome) -> None:
        """Write the outcome (services.run_finish's fields) while the lease is ours."""
        if not services.run_finish(run_id=self.run.pk, worker_id=self.worker_id, **outcome):
            log.warning(
                "run %s: outcome %s dropped, the lease is gone", self.run.pk, outcome["status"]
            )


def _cpu_seconds(box) -> float:
    """The sandbox's CPU time: its cgroup's count, or without cgroups its wall time (an
    upper bound for one process), never more than its limit."""
    used = box.cgroups.cpu_seconds()
    if used is None:
        used = time.monotonic() - box.started
    return round(min(used, box.spec.limits.cpu_seconds), 3)
