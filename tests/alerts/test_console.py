"""The console's alerts page, the badges of traces and runs that raised alerts, and the
rule and endpoint settings pages: role checks, audit, and one query per page for badges."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.models import Alert, AlertRule, WebhookEndpoint
from controlplane.models import AuditEvent, Role
from tests.alerts.helpers import Recorder, ingest_and_detect
from tests.factories import MembershipFactory, UserFactory
from tests.frontend.console.pagetext import visible

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_member(acme):
    dave = UserFactory(username="dave@acme.test")
    MembershipFactory(tenant=acme, user=dave, role=Role.MEMBER)
    return dave


def looping_traces(acme, rule, n=1) -> list[str]:
    rule("loop", threshold=3)
    traces = []
    for _ in range(n):
        rec = Recorder()
        traces.append(rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(3)]))
        ingest_and_detect(acme, rec.spans())
    return traces


def test_the_alerts_page_lists_filters_and_links_to_the_span(client, acme, rule):
    (trace,) = looping_traces(acme, rule)
    alert = Alert.all_tenants.get(tenant=acme)
    client.force_login(acme.owner)
    page = client.get("/t/acme/alerts/").content.decode()
    assert f'href="/t/acme/traces/{trace}/?span={alert.span_id}"' in page
    assert "lookup_order called 3 times" in visible(page) and "agent support" in visible(page)
    for query, shown in [("state=open", True), ("state=resolved", False),
                         ("detector=loop", True), ("detector=budget", False),
                         ("agent=support", True), ("agent=other", False),
                         (f"trace={trace}", True), ("trace=" + "0" * 32, False)]:  # fmt: skip
        listed = client.get(f"/t/acme/alerts/?{query}", HTTP_HX_REQUEST="true")
        assert (f'data-alert="{alert.pk}"' in listed.content.decode()) is shown, query
    bad = client.get("/t/acme/alerts/?state=sleeping")
    assert bad.status_code == 400 and "state: must be one of" in visible(bad.content.decode())


def test_members_acknowledge_and_resolve_and_the_page_says_who(
    client, acme, rule, acme_member, acme_viewer
):
    looping_traces(acme, rule)
    alert = Alert.all_tenants.get(tenant=acme)
    client.force_login(acme_viewer)
    page = client.get("/t/acme/alerts/").content.decode()
    assert "Acknowledge" not in page and "Resolve" not in page  # viewers get no controls
    assert client.post(f"/t/acme/alerts/{alert.pk}/acknowledge").status_code == 403
    client.force_login(acme_member)
    answer = client.post(f"/t/acme/alerts/{alert.pk}/acknowledge", {"query": "state=acknowledged"})
    assert answer.status_code == 302 and answer["Location"] == "/t/acme/alerts/?state=acknowledged"
    text = visible(client.get("/t/acme/alerts/").content.decode())
    assert "acknowledged by dave@acme.test" in text
    client.post(f"/t/acme/alerts/{alert.pk}/resolve")
    text = visible(client.get("/t/acme/alerts/").content.decode())
    assert "resolved by dave@acme.test" in text and "Resolve" not in text
    done = client.post(f"/t/acme/alerts/{alert.pk}/resolve", follow=True)
    assert "the alert is resolved" in visible(done.content.decode())
    actions = AuditEvent.all_tenants.filter(tenant=acme, target_id=str(alert.pk))
    assert sorted(actions.values_list("action", flat=True)) == [
        "alert.acknowledged",
        "alert.resolved",
    ]


def test_traces_that_raised_alerts_wear_a_badge_read_in_one_query_a_page(client, acme, rule):
    looping = looping_traces(acme, rule, n=3)
    rec = Recorder()
    calm = rec.trace(lambda r: r.tool("lookup_order", {"order": 1}))
    ingest_and_detect(acme, rec.spans())
    client.force_login(acme.owner)
    page = client.get("/t/acme/traces/").content.decode()
    for trace in looping:
        assert f'href="/t/acme/alerts/?trace={trace}"' in page
    assert f"?trace={calm}" not in page and page.count("1 alert<") == 3
    with CaptureQueriesContext(connection) as three:
        client.get("/t/acme/traces/")
    more = looping_traces(acme, rule, n=3)
    with CaptureQueriesContext(connection) as six:
        client.get("/t/acme/traces/")
    assert len(six) == len(three), "badges must not cost a query per row"
    assert sum("alerts_alert" in q["sql"] for q in six.captured_queries) == 1
    trace_page = client.get(f"/t/acme/traces/{more[0]}/").content.decode()
    assert f'href="/t/acme/alerts/?trace={more[0]}"' in trace_page
    assert "alert-badge" not in client.get(f"/t/acme/traces/{calm}/").content.decode()


def test_runs_that_raised_alerts_wear_a_badge(client, acme):
    from controlplane.services import Actor
    from controlplane.tenancy import tenant_scope
    from execution import services as execution_services
    from tests.execution.bundles import agent_with_bundle

    agent = agent_with_bundle(acme, name="looper", code="def main(ctx, input):\n    return 1\n")
    with tenant_scope(acme):
        runs = [
            execution_services.run_create(
                tenant=acme, agent=agent, version=None, input=None, limits=None,
                actor=Actor.system(),
            )
            for _ in range(2)
        ]  # fmt: skip
        rule = AlertRule.objects.create(tenant=acme, detector="stuck_run")
        Alert.objects.create(
            tenant=acme, rule=rule, detector="stuck_run", cause="stuck", summary="stuck",
            run_id=str(runs[0].pk),
        )  # fmt: skip
    client.force_login(acme.owner)
    page = client.get("/t/acme/runs/").content.decode()
    assert f'href="/t/acme/alerts/?run={runs[0].pk}"' in page
    assert f"?run={runs[1].pk}" not in page
    run_page = client.get(f"/t/acme/runs/{runs[0].pk}/").content.decode()
    assert f'href="/t/acme/alerts/?run={runs[0].pk}"' in run_page
    listed = client.get(f"/t/acme/alerts/?run={runs[0].pk}").content.decode()
    assert f'href="/t/acme/runs/{runs[0].pk}/"' in listed


def test_admins_create_change_and_delete_rules_audited(client, acme, acme_viewer):
    endpoint = WebhookEndpoint.all_tenants.create(
        tenant=acme, url="https://hooks.example.com/a", secret="whsec_x"
    )
    client.force_login(acme.owner)
    url = "/t/acme/settings/alert-rules/"
    created = client.post(
        url, {"detector": "loop", "agent": "support", "threshold": "4",
              "endpoints": [endpoint.pk], "stop_run": "on"}, follow=True,
    )  # fmt: skip
    rule = AlertRule.all_tenants.get(tenant=acme)
    assert (rule.detector, rule.agent, rule.threshold, rule.stop_run) == (
        "loop",
        "support",
        4,
        True,
    )
    assert list(rule.endpoints.all()) == [endpoint]
    assert "watches from now on" in visible(created.content.decode())
    bad = client.post(url, {"detector": "vibes"})
    assert bad.status_code == 400 and "Select a valid choice" in bad.content.decode()
    assert client.post(url, {"detector": "loop", "threshold": "-1"}).status_code == 400
    edit = client.get(f"{url}{rule.pk}/").content.decode()
    assert 'value="support"' in edit
    client.post(f"{url}{rule.pk}/", {"detector": "loop", "agent": "", "threshold": ""})
    rule.refresh_from_db()
    assert (rule.agent, rule.threshold, rule.stop_run, list(rule.endpoints.all())) == (
        "",
        None,
        False,
        [],
    )
    assert "(default)" in client.get(url).content.decode()
    client.force_login(acme_viewer)
    page = client.get(url).content.decode()
    assert 'id="add-rule"' not in page and "Delete" not in page
    assert client.post(f"{url}{rule.pk}/delete").status_code == 403
    client.force_login(acme.owner)
    client.post(f"{url}{rule.pk}/delete")
    assert not AlertRule.all_tenants.filter(tenant=acme).exists()
    actions = AuditEvent.all_tenants.filter(tenant=acme, action__startswith="alert_rule.")
    assert sorted(actions.values_list("action", flat=True)) == [
        "alert_rule.create", "alert_rule.delete", "alert_rule.update",
    ]  # fmt: skip


def test_admins_add_an_endpoint_see_its_secret_once_test_change_and_delete_it(
    client, acme, acme_viewer, settings, django_capture_on_commit_callbacks
):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ()
    client.force_login(acme.owner)
    url = "/t/acme/settings/webhook-endpoints/"
    created = client.post(url, {"url": "https://hooks.example.com/a", "format": "standard"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    secret = re.search(r'id="new-secret">([^<]+)<', created.content.decode()).group(1)
    endpoint = WebhookEndpoint.all_tenants.get(tenant=acme)
    assert secret == endpoint.secret and secret.startswith("whsec_")
    assert secret not in client.get(url).content.decode()
    refused = client.post(url, {"url": "http://127.0.0.1:9/", "format": "standard"})
    assert refused.status_code == 400 and "loopback" in visible(refused.content.decode())
    with django_capture_on_commit_callbacks() as queued:
        tested = client.post(f"{url}{endpoint.pk}/test", follow=True)
    assert len(queued) == 1 and "A test message (msg_test_" in visible(tested.content.decode())
    changed = client.post(
        f"{url}{endpoint.pk}/", {"url": "https://hooks.example.com/b", "format": "slack"}
    )
    assert changed.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.format, endpoint.secret) == (
        "https://hooks.example.com/b",
        "slack",
        secret,
    )
    assert (
        client.post(f"{url}{endpoint.pk}/", {"url": "ftp://x", "format": "slack"}).status_code
        == 400
    )
    assert "Nothing sent yet" in client.get(f"{url}{endpoint.pk}/").content.decode()
    client.force_login(acme_viewer)
    page = client.get(url).content.decode()
    assert "Send test" not in page and 'id="add-endpoint"' not in page
    assert client.post(f"{url}{endpoint.pk}/test").status_code == 403
    assert secret not in client.get(f"{url}{endpoint.pk}/").content.decode()
    client.force_login(acme.owner)
    client.post(f"{url}{endpoint.pk}/delete")
    assert not WebhookEndpoint.all_tenants.filter(tenant=acme).exists()
    actions = AuditEvent.all_tenants.filter(tenant=acme, action__startswith="webhook_endpoint.")
    assert sorted(actions.values_list("action", flat=True)) == [
        "webhook_endpoint.create", "webhook_endpoint.delete", "webhook_endpoint.test",
        "webhook_endpoint.update",
    ]  # fmt: skip
