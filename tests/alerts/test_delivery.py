import pytest

from alerts import services
from alerts.delivery import sign
from alerts.detectors import Finding
from alerts.models import Delivery, WebhookEndpoint
from alerts.tasks import alert_deliver
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from tests.alerts.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_acme(acme):
    # Services run in a tenant's scope (views and tasks open it).
    with tenant_scope(acme):
        yield


@pytest.fixture
def loopback_allowed(settings):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ("127.0.0.0/8",)


def raise_loop(rule, trace_id="ab" * 16):
    finding = Finding(
        cause=f"loop:repeat:{trace_id}", span_id="cd" * 8, summary="a loop", detail={}
    )
    return services.alert_raise(
        rule=rule, finding=finding, agent="support", trace_id=trace_id, run_id=""
    )


def test_it_signs_as_standard_webhooks_does():
    # The example of the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_it_delivers_each_alert_once_although_the_first_attempt_fails(
    acme, rule, loopback_allowed, django_capture_on_commit_callbacks
):
    endpoint = services.webhook_endpoint_create(
        tenant=acme, data={"url": "http://127.0.0.1:9/x"}, actor=Actor()
    )
    receiver = Receiver(endpoint.secret, fail_first=1)
    try:
        WebhookEndpoint.all_tenants.filter(pk=endpoint.pk).update(url=receiver.url)
        loop = rule("loop")
        loop.endpoints.add(endpoint)
        with django_capture_on_commit_callbacks() as queued:
            alert = raise_loop(loop)
            assert raise_loop(loop) is None  # the same cause again: no second incident
        assert len(queued) == 1
        kwargs = {"tenant_id": acme.id, "alert_id": alert.pk, "endpoint_id": endpoint.pk}
        alert_deliver.apply(kwargs=kwargs)  # in this process; its retry too
        alert_deliver.apply(kwargs=kwargs)  # a redelivered task sends nothing
        assert [a["problem"] for a in receiver.attempts] == [None, None]
        assert receiver.attempts[0]["id"] == receiver.attempts[1]["id"]
        (body,) = receiver.taken.values()
        assert body["type"] == "alert.raised"
        assert body["data"]["trace_id"] == "ab" * 16 and body["data"]["span_id"] == "cd" * 8
        log = list(Delivery.all_tenants.filter(alert=alert).order_by("attempt"))
        assert [(d.attempt, d.ok, d.status_code) for d in log] == [(1, False, 503), (2, True, 204)]
    finally:
        receiver.close()


def test_it_sends_a_slack_body_and_a_test_message(acme, loopback_allowed):
    endpoint = services.webhook_endpoint_create(
        tenant=acme, data={"url": "http://127.0.0.1:9/x", "format": "slack"}, actor=Actor()
    )
    receiver = Receiver(endpoint.secret)
    try:
        WebhookEndpoint.all_tenants.filter(pk=endpoint.pk).update(url=receiver.url)
        alert_deliver.apply(
            kwargs={"tenant_id": acme.id, "alert_id": None, "endpoint_id": endpoint.pk,
                    "test_id": "msg_test_1"}
        )  # fmt: skip
        assert receiver.taken == {"msg_test_1": {"text": "[test] a test message from Flightdeck"}}
    finally:
        receiver.close()


def test_it_sends_e_mail(acme, rule, mailoutbox):
    endpoint = services.webhook_endpoint_create(
        tenant=acme, data={"url": "mailto:oncall@acme.test"}, actor=Actor()
    )
    loop = rule("loop")
    loop.endpoints.add(endpoint)
    alert = raise_loop(loop)
    alert_deliver.apply(
        kwargs={"tenant_id": acme.id, "alert_id": alert.pk, "endpoint_id": endpoint.pk}
    )
    (mail,) = mailoutbox
    assert mail.to == ["oncall@acme.test"] and "a loop" in mail.subject


def test_it_refuses_loopback_unless_the_operator_allows_it(acme, settings):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ()
    with pytest.raises(services.FieldError) as refused:
        services.webhook_endpoint_create(
            tenant=acme, data={"url": "http://127.0.0.1:8080/"}, actor=Actor()
        )
    assert refused.value.field == "url" and "EGRESS_ALLOW_PRIVATE_NETWORKS" in str(refused.value)


def test_it_refuses_the_platforms_own_listeners_even_when_allowed(acme, loopback_allowed, settings):
    with pytest.raises(services.FieldError) as refused:
        services.webhook_endpoint_create(
            tenant=acme, data={"url": f"http://127.0.0.1:{settings.WEB_PORT}/"}, actor=Actor()
        )
    assert "platform's own listeners" in str(refused.value)
