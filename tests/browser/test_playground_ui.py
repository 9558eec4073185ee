"""The playground in Chromium: an external agent's chat span, sent over OTLP, opened from
the trace view, edited and run against the local Messages API server; the answer links
to the new trace, which links back to the source span."""

import re

import pytest
from playwright.sync_api import expect

from tests.billing.conftest import price_book  # noqa: F401 - the seed prices
from tests.browser.conftest import log_in
from tests.replay.test_playground_api import MODEL, chat_spans, hexes
from tests.tracing.instrumented import conversation, http_exporter

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_runs_an_edited_external_call_and_links_the_traces(
    live_server, page, shot, acme, make_key, traced, settings, messages_api
):
    from execution import llm

    settings.EXECUTION_LLM_BASE_URL = messages_api.url  # the live server runs in-process
    settings.EXECUTION_LLM_API_KEY = "local-test-key"
    llm._client.cache_clear()
    provider, client = traced("openllmetry", http_exporter(live_server, make_key(acme, "ingest")))
    trace_id = f"{conversation(provider, client, session='pg-ui', user='user-1'):032x}"
    source = hexes(chat_spans(acme, trace_id)[1])  # after the tool call

    log_in(page, live_server.url, "alice@acme.test")
    page.goto(f"{live_server.url}/t/acme/traces/{trace_id}/")
    page.locator(f"#span-{source[1]}").click()
    expect(page.locator("#detail .detail")).to_be_visible()
    page.locator("#open-playground").click()
    expect(page).to_have_url(re.compile(rf"/spans/{source[1]}/playground$"))
    messages = page.locator("#pg-messages > li")
    expect(messages).to_have_count(3)  # user, assistant (tool_use), user (tool_result)
    expect(page.locator("#pg-system")).to_have_value("Be brief.")
    # claude-test has no price: the page says so and fills in a model it can call.
    expect(page.locator(".playground-note")).to_contain_text("claude-test")

    # A message added, then removed again; nothing is run meanwhile.
    page.locator("#pg-add").click()
    expect(messages).to_have_count(4)
    messages.nth(3).locator(".pg-remove").click()
    expect(messages).to_have_count(3)

    page.locator("#pg-model").fill(MODEL)
    result = messages.nth(2).locator("textarea")
    result.fill(result.input_value().replace("shipped", "delayed"))
    shot("40-playground-edited")
    page.locator("#pg-run").click()
    expect(page.locator("#pg-answer-text")).to_have_text("The tool returned: delayed")
    expect(page.locator("#pg-tokens")).to_have_text(re.compile(r"\d+ / \d+"))
    expect(page.locator("#pg-cost")).to_have_text(re.compile(r"\$0\.\d+"))
    expect(page.locator("#pg-runs tr")).to_have_count(1)
    shot("41-playground-answer")

    page.locator("#pg-new-trace").click()
    expect(page.locator("#trace-models")).to_have_text(MODEL)
    expect(page.locator("#trace-playground-source")).to_contain_text(source[1])
    shot("42-playground-trace")
    page.locator("#trace-playground-source a").click()
    expect(page).to_have_url(re.compile(rf"/traces/{trace_id}/\?span={source[1]}$"))
    expect(page.locator("#detail #playground-runs a")).to_have_count(1)
