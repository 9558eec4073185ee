"""The coding-agents page in Chromium, fed by the SDK's own exporters with Claude Code's
and Codex CLI's records: totals, charts, users, sessions linked to the session view,
and the period switched by htmx."""

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from playwright.sync_api import expect

from controlplane.services import Actor

# The seed price book, reloaded after an earlier transactional test's flush emptied it.
from tests.billing.conftest import price_book  # noqa: F401
from tests.billing.helpers import cost_queue
from tests.browser.conftest import log_in
from tests.tracing.codingagents import (
    CLAUDE_CODE,
    CLAUDE_CODE_METRICS,
    CODEX,
    delta,
    fixture,
    send,
    send_metrics,
)
from tracing.services import redaction_policy_update

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SESSION = "6f1c2b9e-3d1a-4b7e-9c55-0e2a7d4b1f10"


def test_it_shows_the_coding_agents_usage(live_server, page, shot, acme, make_key, settings):
    # This tenant keeps its members' e-mails in metrics and spans (they name who spent).
    redaction_policy_update(
        tenant=acme, custom_patterns=[], drop_keys=[], never_scan_keys=["user.email"],
        actor=Actor.system(),
    )  # fmt: skip
    key = make_key(acme, "ingest")
    headers = {"Authorization": f"Bearer {key}"}
    with cost_queue(settings) as drain:
        send(OTLPLogExporter(endpoint=f"{live_server.url}/v1/logs", headers=headers),
             fixture(CLAUDE_CODE))  # fmt: skip
        send(OTLPLogExporter(endpoint=f"{live_server.url}/v1/logs", headers=headers),
             fixture(CODEX))  # fmt: skip
        drain()
    metrics = OTLPMetricExporter(
        endpoint=f"{live_server.url}/v1/metrics", headers=headers, preferred_temporality=delta()
    )
    send_metrics(metrics, fixture(CLAUDE_CODE_METRICS))

    log_in(page, live_server.url, "alice@acme.test")
    page.goto(f"{live_server.url}/t/acme/")
    page.get_by_role("link", name="Coding agents").click()
    expect(page.locator("h1")).to_have_text("Coding agents")
    expect(page.locator("#total-tokens")).to_have_text("2900 / 880 / 40200")
    expect(page.locator("#total-cost")).to_have_text("$0.0421")
    expect(page.locator("#priced-cost")).to_contain_text("claude-code $0.040175 (3 calls)")
    expect(page.locator("#priced-cost")).to_contain_text("codex $")
    expect(page.locator("#total-lines")).to_have_text("120 / 35")
    expect(page.locator("#total-commits")).to_have_text("2, 1")
    # The metric says 3 and 1, Codex's decisions 1 and 1.
    expect(page.locator("#total-acceptance")).to_contain_text("67% (4 accepted, 2 rejected)")
    expect(page.locator("#coding-users tbody tr").first).to_contain_text("dev@acme.example")
    drawn = page.evaluate(
        "() => ['tokens', 'cost'].map(name => window.Chart.getChart("
        "document.querySelector(`canvas[data-chart=${name}]`)).data.datasets.length)"
    )
    assert drawn == [2, 1]  # two models; one user
    shot("30-coding-agents")

    sessions = page.locator("#coding-sessions tbody tr")
    expect(sessions).to_have_count(2)
    claude = sessions.filter(has_text="claude-code")
    expect(claude).to_contain_text("2")  # prompts
    claude.get_by_role("link").click()
    expect(page).to_have_url(f"{live_server.url}/t/acme/sessions/{SESSION}/")
    expect(page.locator("body")).to_contain_text("invoke_agent claude-code")

    page.go_back()
    page.get_by_role("link", name="7 days").click()
    expect(page.locator("#coding-period a[aria-current]")).to_have_text("7 days")
    expect(page).to_have_url(f"{live_server.url}/t/acme/coding-agents/?days=7")
    expect(page.locator("#total-lines")).to_have_text("120 / 35")
    assert page.evaluate(
        "() => !!window.Chart.getChart(document.querySelector('canvas[data-chart=tokens]'))"
    )


def test_another_tenant_sees_none_of_it(live_server, page, acme, globex, make_key):
    key = make_key(acme, "ingest")
    send(OTLPLogExporter(endpoint=f"{live_server.url}/v1/logs",
                         headers={"Authorization": f"Bearer {key}"}), fixture(CLAUDE_CODE))  # fmt: skip
    log_in(page, live_server.url, "charlie@globex.test")
    page.goto(f"{live_server.url}/t/globex/coding-agents/")
    expect(page.locator("#coding-sessions")).to_contain_text("No coding-agent session")
    response = page.goto(f"{live_server.url}/t/acme/coding-agents/")
    assert response.status == 404
