"""The worker's own lifecycle: a worker asked to stop hands its runs back at once."""

import logging
import os
import socket

from billiard.process import active_children
from celery.signals import worker_shutting_down

from execution import services

log = logging.getLogger(__name__)


@worker_shutting_down.connect
def hand_back_runs(sig=None, how=None, **kwargs) -> None:
    """On SIGTERM (or SIGINT, SIGQUIT) the worker stops taking messages and waits for
    its tasks; a run may go on for many minutes, longer than an orchestrator waits
    before SIGKILL, after which its lease would have to run out. Its runs are handed
    back first instead, and each supervisor stops its sandbox within a second.

    A run's lease names the process running it: a pool process (prefork) or this one
    (the threads pool of the embedded default)."""
    host = socket.gethostname()
    owners = [f"{host}:{os.getpid()}"] + [f"{host}:{p.pid}" for p in active_children()]
    try:
        handed = services.runs_hand_back(owners=owners)
    except Exception:  # noqa: BLE001 - the leases then run out, as after a crash
        log.exception("the worker could not hand its runs back on %s", sig)
        return
    if handed:
        log.warning("%s: handed %d run(s) back to the queue (%s shutdown)", sig, handed, how)
