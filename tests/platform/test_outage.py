"""Redis or the database gone for 10 s during ingest: the web process answers 503 with
Retry-After, the exporters retry, and every span is stored once.

The machine's Redis and PostgreSQL serve other tests, so the outage is a loopback proxy
in front of them (controlplane.loopback.TcpProxy), cut for 10 s, with the web process
pointed at the proxy."""

import time
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings

from controlplane.loopback import TcpProxy, wait_until
from tests.platform.conftest import TEST_TIMEOUT, process_env, stored_spans
from tracing import otlpload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(TEST_TIMEOUT),
    pytest.mark.django_db(transaction=True),
]
OUTAGE_SECONDS = 10


def proxied(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    return parts._replace(
        netloc=parts.netloc.replace(parts.hostname + f":{parts.port}", proxy.address)
    ).geturl()


def backend(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def cut_off_proxy(service: str) -> tuple[TcpProxy, dict]:
    """A proxy in front of Redis or the database, and the environment that points a
    process at it instead."""
    if service == "redis":
        proxy = TcpProxy([backend(settings.REDIS_URL)])
        return proxy, {
            "REDIS_URL": proxied(settings.REDIS_URL, proxy),
            "CELERY_BROKER_URL": proxied(settings.CELERY_BROKER_URL, proxy),
        }
    database = process_env()["DATABASE_URL"]
    proxy = TcpProxy([backend(database)])
    return proxy, {"DATABASE_URL": proxied(database, proxy)}


@pytest.mark.parametrize("service", ["redis", "database"])
def test_it_loses_no_span_when_a_service_goes_away(service, acme, make_key, launch):
    key = make_key(acme, "ingest")
    proxy, env = cut_off_proxy(service)
    web = launch.web("web", **env)
    url = f"http://127.0.0.1:{web.port}"
    clients = [
        otlpload.ExportingClient(
            url=url,
            key=key,
            batches=otlpload.batches(count=30, traces=2, steps=3, seed=seed),
            pause=0.5,
        ).start()
        for seed in (21, 22)
    ]
    wait_until(lambda: min(c.exported for c in clients) >= 3, timeout=60, what="no progress")
    proxy.cut()
    try:
        time.sleep(1)
        probe = httpx.post(
            f"{url}/v1/traces",
            content=otlpload.encode(otlpload.batches(count=1, traces=1, steps=1, seed=3)[0]),
            headers={"Authorization": f"Bearer {key}", "Content-Type": otlpload.PROTOBUF},
            timeout=30,
        )
        during = sum(c.exported for c in clients)
        time.sleep(OUTAGE_SECONDS - 1)
    finally:
        proxy.restore()
    assert probe.status_code == 503, probe.text
    assert int(probe.headers["Retry-After"]) > 0
    for client in clients:
        client.join(timeout=120)
    proxy.close()
    accepted = set().union(*(c.accepted for c in clients))
    given_up = set().union(*(c.given_up for c in clients))
    print(
        f"\n{service} away {OUTAGE_SECONDS} s: {len(accepted)} spans accepted, {len(given_up)} given up"
    )
    assert not given_up
    assert len(accepted) == 2 * 30 * 2 * 4
    stored = stored_spans(acme)
    assert accepted <= stored.keys()
    assert set(stored.values()) == {1}
    assert during < 2 * 30  # the outage fell within the load


@pytest.mark.parametrize("service", ["redis", "database"])
def test_it_lets_a_run_wait_out_an_outage_and_continue(service, acme, make_key, launch, settings):
    from replay.models import JournalStep
    from tests.platform.test_worker_scale import EXPECTED, finished, start_receiver
    from tests.replay.test_resume import effect_tool, start

    receiver = start_receiver(acme, settings)
    try:
        proxy, env = cut_off_proxy(service)
        receiver.delay = 0.5
        agent = effect_tool(acme, receiver, name="effect", idempotent=True)
        launch.worker("w1", **env)
        run = start(acme, agent, "effect")
        wait_until(
            lambda: JournalStep.all_tenants.filter(run_id=run.pk).count() >= 2,
            timeout=60,
            what="the run did not start",
        )
        proxy.cut()
        time.sleep(OUTAGE_SECONDS)
        proxy.restore()
        (done,) = finished([run], timeout=90)
        proxy.close()
        print(
            f"\n{service} away {OUTAGE_SECONDS} s mid-run: {done.status}, attempts {done.attempts}"
        )
        assert done.status == "succeeded", (done.error, done.logs)
        assert done.output == EXPECTED
        assert set(receiver.effects.values()) == {1}
    finally:
        receiver.shutdown()
