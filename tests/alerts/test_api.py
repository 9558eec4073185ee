import pytest

from alerts import services
from alerts.detectors import Finding
from alerts.models import Alert, AlertRule
from controlplane.tenancy import tenant_scope

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_creates_changes_lists_and_deletes_rules(api, acme, make_key, settings):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ("127.0.0.0/8",)
    key = make_key(acme, "admin")
    created = api.post(
        "/api/v1/webhook-endpoints", key=key, json={"url": "http://127.0.0.1:9/hook"}
    )
    assert created.status_code == 201
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["format"] == "standard"
    listed = api.get("/api/v1/webhook-endpoints", key=key).json()
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    rule = api.post(
        "/api/v1/alert-rules",
        key=key,
        json={"detector": "loop", "agent": "support", "threshold": 4,
              "endpoints": [endpoint["id"]], "stop_run": True},
    ).json()  # fmt: skip
    assert (rule["detector"], rule["agent"], rule["threshold"], rule["stop_run"]) == (
        "loop", "support", 4, True,
    )  # fmt: skip
    assert rule["endpoints"] == [endpoint["id"]]
    changed = api.request(
        "PUT", f"/api/v1/alert-rules/{rule['id']}", key=key, json={"threshold": None}
    )
    assert changed.status_code == 200
    assert changed.json()["threshold"] is None and changed.json()["effective_threshold"] == 3
    assert [r["id"] for r in api.get("/api/v1/alert-rules", key=key).json()] == [rule["id"]]
    test = api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test", key=key)
    assert test.status_code == 202 and test.json()["webhook_id"].startswith("msg_test_")
    assert api.delete(f"/api/v1/alert-rules/{rule['id']}", key=key).status_code == 204
    assert api.get(f"/api/v1/alert-rules/{rule['id']}", key=key).status_code == 404


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/v1/alert-rules", {"detector": "vibes"}, "detector"),
        ("/api/v1/alert-rules", {"detector": "loop", "threshold": "high"}, "threshold"),
        ("/api/v1/alert-rules", {"detector": "loop", "endpoints": [987654]}, "endpoints"),
        ("/api/v1/alert-rules", {"detector": "loop", "stop_run": "yes"}, "stop_run"),
        ("/api/v1/webhook-endpoints", {"url": "ftp://example.com/"}, "url"),
        ("/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:8080/"}, "url"),
        ("/api/v1/webhook-endpoints", {"url": "https://example.com/", "format": "xml"}, "format"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, acme, make_key, path, body, field):
    answer = api.post(path, key=make_key(acme, "admin"), json=body)
    assert answer.status_code == 400
    assert field in answer.text


def test_alerts_are_listed_filtered_acknowledged_and_resolved(api, acme, globex, make_key):
    with tenant_scope(acme):
        rule = AlertRule.objects.create(tenant=acme, detector="loop")
        finding = Finding(cause="loop:x", span_id="cd" * 8, summary="looping", detail={})
        alert = services.alert_raise(
            rule=rule, finding=finding, agent="support", trace_id="ab" * 16, run_id=""
        )
    key = make_key(acme, "read", "write")
    (row,) = api.get("/api/v1/alerts?state=open&detector=loop&agent=support", key=key).json()
    assert (row["id"], row["trace_id"], row["span_id"]) == (alert.pk, "ab" * 16, "cd" * 8)
    assert api.get("/api/v1/alerts?detector=budget", key=key).json() == []
    assert api.get("/api/v1/alerts?since=2999-01-01T00:00:00Z", key=key).json() == []
    assert "since" in api.get("/api/v1/alerts?since=yesterday", key=key).text
    assert "state" in api.get("/api/v1/alerts?state=sleeping", key=key).text
    acked = api.post(f"/api/v1/alerts/{alert.pk}/acknowledge", key=key).json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_at"]
    assert api.post(f"/api/v1/alerts/{alert.pk}/acknowledge", key=key).status_code == 400
    assert api.post(f"/api/v1/alerts/{alert.pk}/resolve", key=key).json()["state"] == "resolved"
    # Resolved, the same cause opens a new incident.
    with tenant_scope(acme):
        again = services.alert_raise(
            rule=rule, finding=finding, agent="support", trace_id="ab" * 16, run_id=""
        )
    assert again is not None and Alert.all_tenants.filter(tenant=acme).count() == 2
    # Globex sees none of it.
    assert api.get("/api/v1/alerts", key=make_key(globex, "read")).json() == []
    assert (
        api.post(
            f"/api/v1/alerts/{alert.pk}/resolve", key=make_key(globex, "read", "write")
        ).status_code
        == 404
    )


def test_an_endpoint_is_changed_by_put_within_the_egress_rules(api, acme, make_key, settings):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ("127.0.0.0/8",)
    key = make_key(acme, "admin")
    endpoint = api.post(
        "/api/v1/webhook-endpoints", key=key, json={"url": "http://127.0.0.1:9/hook"}
    ).json()
    path = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    changed = api.request(
        "PUT", path, key=key, json={"url": "https://hooks.example.com/a", "format": "slack"}
    )
    assert changed.status_code == 200
    assert (changed.json()["url"], changed.json()["format"]) == (
        "https://hooks.example.com/a", "slack",
    )  # fmt: skip
    assert "secret" not in changed.json()
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ()
    refused = api.request("PUT", path, key=key, json={"url": "http://127.0.0.1:9/hook"})
    assert refused.status_code == 400 and "url" in refused.json()["detail"]
    for body, field in [({"format": "xml"}, "format"), ({"secret": "mine"}, "secret")]:
        answer = api.request("PUT", path, key=key, json=body)
        assert answer.status_code == 400 and field in answer.json()["detail"]
    assert api.get(path, key=key).json()["url"] == "https://hooks.example.com/a"
    with tenant_scope(acme):
        from controlplane.models import AuditEvent

        assert AuditEvent.objects.filter(action="webhook_endpoint.update").count() == 1


def test_the_delivery_log_lists_each_attempt_by_alert_and_by_endpoint(
    api, acme, globex, make_key, settings
):
    from alerts.delivery import DeliveryFailed
    from tests.alerts.receiver import Receiver

    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ("127.0.0.0/8",)
    key = make_key(acme, "admin")
    endpoint = api.post(
        "/api/v1/webhook-endpoints", key=key, json={"url": "http://127.0.0.1:9/hook"}
    ).json()
    receiver = Receiver(endpoint["secret"], fail_first=1)
    try:
        api.request(
            "PUT", f"/api/v1/webhook-endpoints/{endpoint['id']}", key=key,
            json={"url": receiver.url},
        )  # fmt: skip
        with tenant_scope(acme):
            rule = AlertRule.objects.create(tenant=acme, detector="loop")
            finding = Finding(cause="loop:y", span_id="cd" * 8, summary="looping", detail={})
            alert = services.alert_raise(
                rule=rule, finding=finding, agent="", trace_id="ab" * 16, run_id=""
            )
            with pytest.raises(DeliveryFailed):  # the receiver refuses the first attempt
                services.delivery_attempt(alert_id=alert.pk, endpoint_id=endpoint["id"], attempt=1)
            services.delivery_attempt(alert_id=alert.pk, endpoint_id=endpoint["id"], attempt=2)
    finally:
        receiver.close()
    by_alert = api.get(f"/api/v1/alerts/{alert.pk}/deliveries", key=key).json()
    by_endpoint = api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries", key=key)
    assert by_endpoint.json() == by_alert
    assert [(d["attempt"], d["status"], d["status_code"]) for d in by_alert] == [
        (2, "delivered", 204), (1, "failed", 503),
    ]  # fmt: skip
    assert by_alert[1]["error"] and by_alert[0]["error"] is None
    assert by_alert[0]["webhook_id"] == by_alert[1]["webhook_id"] and by_alert[0]["created_at"]
    stranger = make_key(globex, "admin")
    assert api.get(f"/api/v1/alerts/{alert.pk}/deliveries", key=stranger).status_code == 404
    assert (
        api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries", key=stranger).status_code
        == 404
    )
