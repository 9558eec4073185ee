"""A trace of an OpenInference-instrumented agent in Chromium: the Input / Output panel
of its root span, the models in the header, the downloads, and the users page."""

import re
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from controlplane.tenancy import tenant_scope
from tests.browser.conftest import log_in
from tests.tracing.instrumented import conversation, http_exporter
from tracing.models import Trace

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_shows_the_root_input_and_output_and_who_the_trace_was_for(
    live_server, page, shot, acme, globex, make_key, traced
):
    provider, client = traced("openinference", http_exporter(live_server, make_key(acme, "ingest")))
    trace_id = f"{conversation(provider, client, session='io-session', user='user-42'):032x}"
    provider2, client2 = traced("openllmetry", http_exporter(live_server, make_key(acme, "ingest")))
    conversation(provider2, client2, session="io-other", user="user-7")

    log_in(page, live_server.url, "alice@acme.test")
    page.goto(f"{live_server.url}/t/acme/traces/{trace_id}/")
    panel = page.locator("#root-io")
    # input.value holds messages: a chat; output.value is an object: indented JSON.
    expect(panel.locator(".io-part").first.locator("li.msg.role-user")).to_contain_text(
        'Please lookup_order {"order": "A-17"}'
    )
    expect(panel.locator(".io-part").nth(1).locator("pre.code")).to_contain_text(
        '"answer": "The tool returned: shipped"'
    )
    expect(page.locator("#trace-models")).to_have_text("claude-test")
    expect(page.locator(".facts")).to_contain_text("user-42")
    shot("20-trace-root-io")

    # The OTLP JSON download re-imports through /v1/traces (into another tenant here).
    with page.expect_download() as download:
        page.click("#download-otlp")
    body = Path(download.value.path()).read_bytes()
    answer = httpx.post(
        f"{live_server.url}/v1/traces",
        content=body,
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {make_key(globex, 'ingest')}",
        },
    )
    assert answer.status_code == 200, answer.text
    with tenant_scope(acme):
        ours = Trace.objects.get(trace_id=uuid.UUID(trace_id))
    with tenant_scope(globex):
        again = Trace.objects.get(trace_id=uuid.UUID(trace_id))
    assert (again.span_count, again.user_id, again.session_id, again.input_tokens) == (
        ours.span_count,
        "user-42",
        "io-session",
        ours.input_tokens,
    )

    # The users page: each user with their traces, sessions and tokens; a user's name
    # opens their traces.
    page.click("nav.mainnav >> text=Users")
    rows = page.locator("#users tr.user-row")
    expect(rows).to_have_count(2)
    first = rows.filter(has_text="user-42")
    expect(first.locator("td").nth(2)).to_have_text("1")
    expect(first.locator("td").nth(3)).to_have_text("1")
    shot("21-users")
    first.locator("a").click()
    expect(page).to_have_url(re.compile(r"/traces/\?user=user-42$"))
    expect(page.locator("tr.trace-row")).to_have_count(1)
    expect(page.locator("tr.trace-row")).to_have_attribute("data-trace", trace_id)
