"""The workers' prefork pool, noticing a killed pool process within half a second.

Celery's pool learns that one of its processes died when the process's sentinel pipe
closes, or else from `maintain_pool`, which it runs every 5 s. The sentinel's write end
is inherited by the pool processes forked after it, so it stays open when its own
process is SIGKILLed (OOM killer, a kill from outside): the loss is then found only by
the timer, and a run acked late waits up to 5 s before its message is handed back and
another process takes it up (`tests/replay/test_resume.py` measures that pickup).
`maintain_pool` reaps with a non-blocking `waitpid` per process, so running it twice a
second costs nothing measurable.
"""

from celery.concurrency import asynpool, prefork

MAINTAIN_EVERY_SECONDS = 0.5


class AsynPool(asynpool.AsynPool):
    @property
    def timers(self):
        return {self.maintain_pool: MAINTAIN_EVERY_SECONDS}


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
