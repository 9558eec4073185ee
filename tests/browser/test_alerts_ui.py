"""Alerts in Chromium, as an ordinary owner: an endpoint and a loop rule set up in the
settings pages (the signing secret shown once), a looping trace's badge in the trace
list, the alerts page filtered, its link opening the trace at the span that raised
it, and the alert acknowledged and resolved with who did it."""

import pytest
from playwright.sync_api import expect

from alerts.models import Alert, AlertRule, WebhookEndpoint
from tests.alerts.helpers import Recorder, ingest_and_detect
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_sets_up_a_rule_shows_the_badge_and_handles_the_alert(
    live_server, page, shot, acme, settings
):
    settings.ALERTS_DETECT_ON_INGEST = False  # detection runs below, in this process
    base = f"{live_server.url}/t/acme"
    log_in(page, live_server.url, "alice@acme.test")

    # Settings › Webhook endpoints: the secret once, then never again.
    page.goto(f"{base}/settings/webhook-endpoints/")
    page.fill("#add-endpoint [name=url]", "https://hooks.example.com/flightdeck")
    page.click("#add-endpoint button[type=submit]")
    secret = page.locator("#new-secret").inner_text().strip()
    assert secret == WebhookEndpoint.all_tenants.get(tenant=acme).secret
    page.click("nav.subnav >> text=Webhook endpoints")
    expect(page.locator("#webhook-endpoints")).to_contain_text("hooks.example.com/flightdeck")
    expect(page.locator("#new-secret")).to_have_count(0)

    # Settings › Alert rules: a loop rule delivered to that endpoint.
    page.click("nav.subnav >> text=Alert rules")
    page.select_option("#add-rule [name=detector]", "loop")
    page.fill("#add-rule [name=threshold]", "3")
    page.check("#add-rule [name=endpoints]")
    page.click("#add-rule button[type=submit]")
    expect(page.locator(".notice-ok")).to_contain_text("watches from now on")
    expect(page.locator("#alert-rules")).to_contain_text("hooks.example.com/flightdeck")
    rule = AlertRule.all_tenants.get(tenant=acme)
    assert rule.threshold == 3 and list(rule.endpoints.all())

    # A looping trace arrives; its row in the trace list wears the badge.
    rec = Recorder()
    trace = rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(4)])
    calm = Recorder()
    calm_trace = calm.trace(lambda r: r.tool("lookup_order", {"order": 1}))
    ingest_and_detect(acme, [*rec.spans(), *calm.spans()])
    alert = Alert.all_tenants.get(tenant=acme)
    page.click("nav.mainnav >> text=Traces")
    badge = page.locator(f'tr[data-trace="{trace}"] .alert-badge')
    expect(badge).to_have_text("1 alert")
    expect(page.locator(f'tr[data-trace="{calm_trace}"] .alert-badge')).to_have_count(0)
    shot("60-trace-list-alert-badge")
    badge.click()

    # The alerts page, filtered to that trace; the filters narrow it with htmx.
    expect(page).to_have_url(f"{base}/alerts/?trace={trace}")
    row = page.locator(f'tr[data-alert="{alert.pk}"]')
    expect(row).to_contain_text("lookup_order called 3 times with the same arguments")
    page.select_option("#alert-filters [name=detector]", "budget")
    expect(page.locator("#alert-results")).to_contain_text("No alert matches these filters.")
    page.select_option("#alert-filters [name=detector]", "loop")
    expect(row).to_be_visible()
    shot("61-alerts-page")

    # Its link opens the trace at the span that raised it.
    row.locator("a.alert-span").click()
    expect(page).to_have_url(f"{base}/traces/{trace}/?span={alert.span_id}")
    expect(page.locator(f'#tree [data-span="{alert.span_id}"]')).to_have_attribute(
        "aria-selected", "true"
    )
    expect(page.locator("#detail .detail-title h2")).to_have_text("execute_tool lookup_order")
    expect(page.locator(".trace-head .alert-badge")).to_have_text("1 alert")

    # Acknowledged, then resolved, each with who did it.
    page.goto(f"{base}/alerts/")
    row.locator("button", has_text="Acknowledge").click()
    expect(row.locator(".alert-state")).to_contain_text("acknowledged by alice@acme.test")
    row.locator("button", has_text="Resolve").click()
    expect(row.locator(".alert-state")).to_contain_text("resolved by alice@acme.test")
    expect(row.locator("button")).to_have_count(0)
    shot("62-alert-resolved")
