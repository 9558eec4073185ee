"""gunicorn's settings on the embedded default (the Procfile's `web`, started by `make run`).

One worker process with threads serves the web, and the OTLP/gRPC receiver runs in that
same process: on one machine with SQLite, whose writers take turns anyway, more
processes each load Django again for no throughput. Production runs `gunicorn` with its
own worker count and `manage.py otlp_grpc` apart (platform/processes.md).

The master imports no application code (no preload): it stays small, and the worker
imports gRPC after the fork, as gRPC requires.
"""

import ctypes
import ctypes.util
import os
import threading
import time

_host = os.environ.get("FLIGHTDECK_HOST", "127.0.0.1")
bind = f"{_host}:{os.environ.get('FLIGHTDECK_PORT', '8000')}"
workers = 1
threads = 8
worker_class = "gthread"
accesslog = "-"
graceful_timeout = 5

# A request with a large body (OTLP batches reach INGEST_MAX_BODY_BYTES, over HTTP or
# gRPC) leaves the freed memory in glibc's heap, where it counts against the process
# until reused: give it back once the worker has been quiet for TRIM_QUIET_S. Trimming after each such request made a
# burst of them fault the same pages back in, request after request (bench/ingest.py,
# 200x10: 0.1 s more system CPU in the web process for 4,200 spans).
TRIM_AFTER_BYTES = 1024 * 1024
TRIM_QUIET_S = 1.0
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


class _QuietTrim:
    """Calls malloc_trim once no request has run for TRIM_QUIET_S after a large one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.last = 0.0
        self.pending = False
        threading.Thread(target=self._run, name="malloc-trim", daemon=True).start()

    def started(self) -> None:
        with self.lock:
            self.active += 1

    def finished(self, large: bool) -> None:
        with self.lock:
            self.active -= 1
            self.last = time.monotonic()
            self.pending = self.pending or large

    def _run(self) -> None:
        while True:
            time.sleep(TRIM_QUIET_S)
            with self.lock:
                due = (
                    self.pending
                    and not self.active
                    and time.monotonic() - self.last >= TRIM_QUIET_S
                )
                if due:
                    self.pending = False
            if due:
                _libc.malloc_trim(0)


def post_worker_init(worker):
    from django.conf import settings

    from tracing.grpc_server import make_server

    worker.quiet_trim = _QuietTrim()
    server, port = make_server(
        settings.OTLP_GRPC_ADDRESS, watch=worker.quiet_trim, large_bytes=TRIM_AFTER_BYTES
    )
    server.start()
    worker.otlp_grpc = server
    host = settings.OTLP_GRPC_ADDRESS.rsplit(":", 1)[0]
    worker.log.info("OTLP/gRPC listening on %s:%s", host, port)


def pre_request(worker, req):
    worker.quiet_trim.started()


def post_request(worker, req, environ, resp):
    length = environ.get("CONTENT_LENGTH") or ""
    worker.quiet_trim.finished(length.isdigit() and int(length) >= TRIM_AFTER_BYTES)


def worker_exit(server, worker):
    grpc_server = getattr(worker, "otlp_grpc", None)
    if grpc_server is not None:
        grpc_server.stop(grace=graceful_timeout).wait()
