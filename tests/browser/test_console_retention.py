"""Settings › Retention in Chromium: an owner sets the days per tier and an agent's own,
and sees them back; a trace of that agent goes warm by them and its page says so; a
viewer reads the days but cannot change them."""

import json

import pytest
from playwright.sync_api import expect

from controlplane.tenancy import tenant_scope
from tests.browser.conftest import log_in
from tests.retention.helpers import apply, send_trace, tier_of
from tracing.retention import selectors
from tracing.retention.models import Tier

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DAYS = {"hot_days": "5", "warm_days": "10", "cold_days": "20", "extended_days": "60"}
# The traces send_trace makes are the `support` agent's: hot for one day, not five.
AGENTS = {"support": {"hot_days": 1}}


def test_an_owner_sets_the_days_and_sees_a_warm_trace_a_viewer_only_reads(
    live_server, chromium, page, shot, acme, acme_viewer
):
    base = f"{live_server.url}/t/acme"
    log_in(page, live_server.url, "alice@acme.test")
    page.goto(f"{base}/settings/retention/")
    expect(page.locator("nav.subnav a[aria-current=page]")).to_have_text("Retention")
    form = page.locator("#retention-policy")
    for name, value in DAYS.items():
        form.locator(f"[name={name}]").fill(value)
    form.locator("[name=agents]").fill(json.dumps(AGENTS))
    form.locator("button[type=submit]").click()
    expect(page.locator(".notice-ok")).to_contain_text("the next retention run applies it")

    # Seen back after a fresh load, in the form and in the page's sentence.
    page.goto(f"{base}/settings/retention/")
    for name, value in DAYS.items():
        expect(form.locator(f"[name={name}]")).to_have_value(value)
    assert json.loads(form.locator("[name=agents]").input_value()) == AGENTS
    expect(page.locator(".page-head")).to_contain_text("warm (one bundle")
    expect(page.locator(".page-head")).to_contain_text("until day 15")
    with tenant_scope(acme):
        policy = selectors.retention_policy_get().as_dict()
    assert policy["hot_days"] == 5 and policy["agents"]["support"]["hot_days"] == 1

    # Bad values are refused: negative days by the browser (the field's min), an agents
    # box that is not JSON by the server, beside the field; nothing changes.
    form.locator("[name=hot_days]").fill("-1")
    assert form.locator("[name=hot_days]").evaluate("e => e.validity.rangeUnderflow")
    form.locator("[name=hot_days]").fill("5")
    form.locator("[name=agents]").fill("{not json")
    form.locator("button[type=submit]").click()
    expect(form.locator(".field-error")).to_have_count(1)
    expect(form.locator(".field-error")).to_contain_text("not JSON")
    with tenant_scope(acme):
        assert selectors.retention_policy_get().as_dict()["hot_days"] == 5
    shot("30-settings-retention")

    # The agent's one hot day is past (the shop's five are not): the trace goes warm.
    trace = send_trace(acme, session="browser")
    assert "1 traces to warm" in apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.WARM
    page.goto(f"{base}/traces/{trace}/")
    expect(page.locator("#trace-tier")).to_contain_text("Warm")
    expect(page.locator("#trace-tier")).to_contain_text("read from its bundle")
    shot("31-trace-warm")
    page.goto(f"{base}/settings/retention/")
    warm_row = page.locator("#retention-storage tbody tr", has_text="warm")
    expect(warm_row.locator("td").nth(1)).to_have_text("1")

    # The viewer sees the days, no form, and a POST of one is refused.
    viewer = chromium.new_context().new_page()
    log_in(viewer, live_server.url, "bob@acme.test")
    viewer.goto(f"{base}/settings/retention/")
    expect(viewer.locator("#retention-policy")).to_have_count(0)
    expect(viewer.locator("#retention-days")).to_contain_text("Hot 5, warm 10, cold 20")
    expect(viewer.locator("#retention-days")).to_contain_text("support")
    token = next(c["value"] for c in viewer.context.cookies() if c["name"] == "csrftoken")
    response = viewer.request.post(
        f"{base}/settings/retention/",
        form={**DAYS, "hot_days": "0", "agents": ""},
        headers={"X-CSRFToken": token},
    )
    assert response.status == 403 and "may not change settings" in response.text()
    with tenant_scope(acme):
        assert selectors.retention_policy_get().as_dict()["hot_days"] == 5
    viewer.context.close()
