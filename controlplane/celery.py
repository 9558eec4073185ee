import os

from celery import Celery, bootsteps, signals
from celery.beat import EmbeddedService
from click import Option

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("flightdeck")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_ready.connect  # a worker on threads, once its tasks are imported
@signals.worker_process_init.connect  # each forked pool process
def _collect_less(**kwargs):
    from controlplane.gctune import collect_less

    collect_less()


class BeatThread(bootsteps.StartStopStep):
    """`celery worker --beat-thread`: beat inside the worker, as one of its threads.

    Celery's own `-B` forks beat into a process of its own; the embedded default (one
    machine, one worker) has no use for a third process. Production runs beat apart
    (platform/processes.md), exactly one of it.
    """

    label = "BeatThread"
    conditional = True

    def __init__(self, w, beat_thread=False, **kwargs):
        self.enabled = bool(beat_thread)
        super().__init__(w, **kwargs)

    def create(self, w):
        return EmbeddedService(
            w.app, thread=True, schedule_filename=w.schedule_filename, scheduler_cls=w.scheduler
        )


app.user_options["worker"].add(
    Option(["--beat-thread"], is_flag=True, default=False, help="Run beat in this worker.")
)
app.steps["worker"].add(BeatThread)
