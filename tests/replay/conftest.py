"""Replay's tests run agents the way execution's do: the local Messages API server, real
Celery workers on this test run's own queues, loopback tool receivers."""

import contextlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from tests.execution.conftest import (  # noqa: F401 - fixtures
    _drop_unconsumed_queue,
    _execution_settings,
    upstream,
    worker,
)
from tests.workers import _TAG, start_worker, stop_worker

RUN_QUEUE = f"{_TAG}-replay-runs"
TOOL_QUEUE = f"{_TAG}-replay-tools"


@pytest.fixture(scope="session")
def two_workers(django_db_setup, messages_api, tmp_path_factory):
    """Two worker processes of four pool processes each, allowed to reach loopback tools,
    on queues of their own (the run's shared worker never sees these runs)."""
    folder = tmp_path_factory.mktemp("replay-workers")
    env = {
        "EXECUTION_QUEUE": RUN_QUEUE,
        "EXECUTION_TOOL_QUEUE": TOOL_QUEUE,
        "EXECUTION_LOCAL_LLM_URL": messages_api.url,
        "EXECUTION_LEASE_SECONDS": "5",
        "EGRESS_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32",
    }
    procs = [
        start_worker(
            name=f"{_TAG}-replay{n}",
            queues=[RUN_QUEUE, TOOL_QUEUE],
            concurrency=4,
            log_path=folder / f"worker{n}.log",
            env=env,
        )
        for n in (1, 2)
    ]
    yield procs
    for proc in procs:
        stop_worker(proc)


@pytest.fixture
def workers(two_workers, settings):
    settings.EXECUTION_QUEUE = RUN_QUEUE
    settings.EXECUTION_TOOL_QUEUE = TOOL_QUEUE
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    return two_workers


class Receiver(ThreadingHTTPServer):
    """A webhook with a side effect per call, carried out once per Idempotency-Key: a
    call sent again with a key it has seen gets the first answer and changes nothing."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.lock = threading.Lock()
        self.arrivals: Counter[str] = Counter()  # requests per key, repeats included
        self.effects: Counter[str] = Counter()  # side effects carried out per key
        self.answers: dict[str, dict] = {}
        self.unkeyed = 0
        self.delay = 0.2  # seconds a call takes: long enough to be killed during

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        key = self.headers.get("idempotency-key")
        with self.server.lock:
            if not key:
                self.server.unkeyed += 1
            self.server.arrivals[key] += 1
            answer = self.server.answers.get(key)
        if answer is None:
            time.sleep(self.server.delay)
            with self.server.lock:
                if key not in self.server.answers:  # the first to finish carries it out
                    self.server.answers[key] = {"effect": body["n"] * 10}
                    self.server.effects[key] += 1
                answer = self.server.answers[key]
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the caller may have been killed meanwhile
            self.wfile.write(data)


@pytest.fixture
def receiver(acme, transactional_db):
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tenant_scope(acme):
        services.allowed_host_add(
            tenant=acme, host=f"127.0.0.1:{server.server_address[1]}", actor=Actor.system()
        )
    yield server
    server.shutdown()
