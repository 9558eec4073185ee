"""Web processes scaled out on one PostgreSQL, Redis and S3: OTLP load spread over two of
them stores every span once, one of them SIGKILLed mid-load loses no span a client was
answered 2xx for, and one stopped with SIGTERM finishes the request it is reading."""

import os
import random
import signal
import threading
import time

import httpx
import pytest

from controlplane.loopback import TcpProxy, wait_until
from tests.platform.conftest import TEST_TIMEOUT, stored_spans
from tracing import otlpload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(TEST_TIMEOUT),
    pytest.mark.django_db(transaction=True),
]


def test_it_stores_each_span_once_across_two_web_processes(acme, make_key, launch):
    key = make_key(acme, "ingest")
    webs = [launch.web("web1"), launch.web("web2")]
    bodies = [
        [otlpload.encode(b) for b in otlpload.batches(count=12, traces=5, steps=4, seed=n)]
        for n in (1, 2)
    ]
    cpu_before = [web.cpu_seconds() for web in webs]
    # Both clients at once, each with a request in flight to each web process.
    urls = [f"http://127.0.0.1:{web.port}" for web in webs]
    seconds = otlpload.post_bodies(urls, key, bodies, connections=2)
    sent = 2 * 12 * 5 * 5
    cpu = [web.cpu_seconds() - before for web, before in zip(webs, cpu_before, strict=True)]
    print(f"\n{sent} spans over 2 web processes: {sent / seconds:.0f} spans/s, CPU {cpu} s")
    stored = stored_spans(acme)
    assert len(stored) == sent
    assert set(stored.values()) == {1}
    assert all(c > 0 for c in cpu)  # both processes did work


def test_it_loses_no_acknowledged_span_when_a_web_process_is_killed(acme, make_key, launch):
    key = make_key(acme, "ingest")
    webs = [launch.web("web1"), launch.web("web2")]
    balancer = TcpProxy([("127.0.0.1", web.port) for web in webs])
    url = f"http://{balancer.address}"
    clients = [
        otlpload.ExportingClient(
            url=url,
            key=key,
            batches=otlpload.batches(count=40, traces=2, steps=3, seed=seed),
            pause=0.05,
        ).start()
        for seed in (11, 12)
    ]
    # Mid-load: at a random point once each client has had some batches answered.
    wait_until(
        lambda: min(c.exported for c in clients) >= random.randint(5, 15),
        timeout=60,
        what="the clients made no progress",
    )
    webs[0].kill()
    for client in clients:
        client.join(timeout=90)
    balancer.close()
    accepted = set().union(*(c.accepted for c in clients))
    given_up = set().union(*(c.given_up for c in clients))
    print(f"\naccepted {len(accepted)} spans, given up and reported: {len(given_up)}")
    assert len(accepted) + len(given_up) == 2 * 40 * 2 * 4
    stored = stored_spans(acme)
    assert accepted <= stored.keys()  # every acknowledged span is stored ...
    assert set(stored.values()) == {1}  # ... once, retries included
    assert stored.keys() <= accepted | given_up
    assert not given_up, "the exporter gave up although the other process was up"


def test_it_finishes_the_request_in_flight_on_sigterm(acme, make_key, launch):
    key = make_key(acme, "ingest")
    web = launch.web("web")
    batch = otlpload.batches(count=1, traces=60, steps=10, seed=7)[0]
    body = otlpload.encode(batch)
    sent_half = threading.Event()

    def slowly():
        # A large export on a slow link: the first half, then the rest two seconds on.
        half = len(body) // 2
        yield body[:half]
        sent_half.set()
        time.sleep(2)
        yield body[half:]

    answer = {}

    def post():
        answer["response"] = httpx.post(
            f"http://127.0.0.1:{web.port}/v1/traces",
            content=slowly(),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": otlpload.PROTOBUF,
                "Content-Length": str(len(body)),
            },
            timeout=60,
        )

    poster = threading.Thread(target=post)
    poster.start()
    assert sent_half.wait(timeout=30)
    time.sleep(0.3)  # the worker has the request and is reading its body
    os.kill(web.pid, signal.SIGTERM)
    poster.join(timeout=60)
    assert answer["response"].status_code == 200, answer["response"].text
    assert web.popen.wait(timeout=40) == 0  # and then it stopped, as asked
    stored = stored_spans(acme)
    assert stored.keys() == {otlpload.span_key(span) for span in batch}
