"""The trace UI in Chromium: traces sent over OTLP, searched, opened, read, followed."""

import json
import re
import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.tracing.otlp import provider_for
from tests.tracing.searchdata import BASE_NS, conversation_trace, index_queue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def exporter(live_server, key):
    return OTLPSpanExporter(
        endpoint=f"{live_server.url}/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )


def test_it_searches_opens_a_trace_reads_a_chat_and_follows_the_session(
    live_server, page, shot, acme, make_key, settings
):
    with index_queue(settings) as drain:
        provider = provider_for(exporter(live_server, make_key(acme, "ingest")))
        first = conversation_trace(provider, session="conv-browser", start_ns=BASE_NS)
        second = conversation_trace(
            provider,
            session="conv-browser",
            user="Thanks. Can I get a refund instead?",
            tool_result="Refund of 42.00 EUR approved for order 1000",
            answer="Your refund is on its way.",
            start_ns=BASE_NS + 30 * 10**9,
            duration_ms=4200,
        )
        conversation_trace(
            provider,
            agent="billing",
            session="conv-other",
            user="Invoice please",
            error=True,
            start_ns=BASE_NS + 60 * 10**9,
        )
        provider.shutdown()
        drain()  # the search index, as the worker would build it

    page.goto(f"{live_server.url}/t/acme/traces/")
    expect(page).to_have_url(re.compile(r"/login/\?next="))
    shot("00-login")
    log_in(page, live_server.url, "alice@acme.test")
    expect(page).to_have_url(re.compile(r"/t/acme/traces/$"))
    rows = page.locator("tr.trace-row")
    expect(rows).to_have_count(3)
    expect(page.locator("#counts")).to_contain_text("3 traces")
    expect(page.locator("#counts")).to_contain_text("1 with errors")
    expect(rows.first.locator(".pill")).to_have_text("Error ×2")  # the tool and the root
    shot("01-trace-list")

    # Counts update by themselves when traces arrive.
    late = provider_for(exporter(live_server, make_key(acme, "ingest")))
    conversation_trace(late, session="conv-late", start_ns=BASE_NS + 90 * 10**9)
    late.shutdown()
    expect(page.locator("#counts")).to_contain_text("4 traces", timeout=12_000)
    expect(page.locator("#counts .new-traces")).to_contain_text("1 new")
    # A full page load: rows can show before the deferred scripts that handle "/" have run.
    with page.expect_navigation():
        page.locator("#counts .new-traces").click()
    expect(rows).to_have_count(4)

    # Full-text search: the URL follows, so the search can be shared.
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type("refund approved")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/traces/\?q=refund\+approved$"))
    expect(rows.first).to_have_attribute("data-trace", second)
    shot("02-search")
    shared = page.url
    page.goto(shared)
    expect(page.locator("#q")).to_have_value("refund approved")
    expect(page.locator("tr.trace-row")).to_have_count(1)

    page.select_option("select[name=status]", "error")
    expect(page.locator(".empty")).to_contain_text("No trace matches")
    page.goto(f"{live_server.url}/t/acme/traces/?status=error")
    expect(page.locator("tr.trace-row")).to_have_count(1)
    # A bad filter says which one and why, in place of the rows.
    page.fill("input[name=attr]", "no-equals-sign")
    page.press("input[name=attr]", "Enter")
    expect(page.locator("#results .notice-error")).to_contain_text("attr")
    expect(page.locator("#results .notice-error")).to_contain_text("is not key=value")

    # Open the trace and its last chat span.
    page.goto(f"{live_server.url}/t/acme/traces/?q=refund+approved")
    page.locator("tr.trace-row a.trace-name").first.click()
    expect(page).to_have_url(re.compile(f"/traces/{second}/$"))
    tree_rows = page.locator("#tree .span-row")
    expect(tree_rows).to_have_count(4)
    expect(page.locator(".detail-empty")).to_be_visible()
    shot("03-trace-view")

    tree_rows.nth(3).click()
    detail = page.locator("#detail .detail")
    expect(detail).to_be_visible()
    expect(page).to_have_url(re.compile(r"\?span=[0-9a-f]{16}$"))
    messages = detail.locator(".conversation > li")
    expect(messages).to_have_count(5)  # system, user, assistant (tool call), tool, answer
    roles = [m.inner_text().split("\n")[0].strip().lower() for m in messages.all()]
    assert [r.split(" ")[0] for r in roles] == ["system", "user", "assistant", "tool", "assistant"]
    expect(messages.nth(0)).to_contain_text("You are a helpful support agent.")
    expect(messages.nth(1)).to_contain_text("Can I get a refund instead?")
    expect(messages.nth(2).locator(".tool-name")).to_have_text("lookup_order")
    assert json.loads(messages.nth(2).locator("pre").inner_text()) == {"order": 1000}
    expect(messages.nth(3)).to_contain_text("Refund of 42.00 EUR approved")
    expect(messages.nth(4)).to_have_class(re.compile("is-output"))
    expect(messages.nth(4)).to_contain_text("Your refund is on its way.")
    expect(detail.locator(".tokens")).to_have_text("100 / 20")
    expect(detail.locator(".attrs").first).to_contain_text("gen_ai.request.model")
    shot("04-chat-span")

    # Keyboard: up to the tool span, its detail follows; fold and unfold the root.
    tree = page.locator("#tree")
    tree.press("ArrowUp")
    expect(tree_rows.nth(2)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#detail .detail-title h2")).to_have_text("execute_tool lookup_order")
    expect(page.locator("#detail")).to_contain_text("Refund of 42.00 EUR approved")
    tree.press("Home")
    expect(tree_rows.nth(0)).to_have_attribute("aria-selected", "true")
    tree.press("ArrowLeft")
    expect(tree_rows.nth(0)).to_have_attribute("aria-expanded", "false")
    expect(tree_rows.nth(1)).to_be_hidden()
    tree.press("ArrowRight")
    expect(tree_rows.nth(1)).to_be_visible()
    tree.press("ArrowDown")
    expect(tree_rows.nth(1)).to_have_attribute("aria-selected", "true")

    # The first trace's chat shows the redacted e-mail as a marker.
    page.goto(f"{live_server.url}/t/acme/traces/{first}/")
    page.locator("#tree .span-row").nth(1).click()
    marker = page.locator("#detail .conversation .redacted").first
    expect(marker).to_contain_text("EMAIL")
    assert "jane.doe" not in page.locator("#detail").inner_text()

    # Follow the session: both turns of the conversation, in order, each message once.
    page.locator("dl.facts a", has_text="conv-browser").click()
    expect(page).to_have_url(re.compile(r"/sessions/conv-browser/$"))
    turns = page.locator("section.turn")
    expect(turns).to_have_count(2)
    text = page.locator(".session-conversation").inner_text()
    assert text.index("Where is my order?") < text.index("Can I get a refund instead?")
    assert text.count("You are a helpful support agent.") == 1
    expect(turns.nth(1)).to_contain_text("Your refund is on its way.")
    shot("05-session")
    page.goto(f"{live_server.url}/t/acme/sessions/")
    expect(page.locator("tr.session-row")).to_have_count(3)
    shot("05-sessions")
    page.goto(f"{live_server.url}/t/acme/sessions/conv-browser/")
    page.locator("a.turn-link").nth(0).click()
    expect(page).to_have_url(re.compile(f"/traces/{first}/$"))


def test_it_keeps_a_2000_span_trace_usable(live_server, page, shot, acme, make_key):
    provider = provider_for(exporter(live_server, make_key(acme, "ingest")))
    provider._active_span_processor._span_processors = ()  # noqa: SLF001 - see below
    # Batches of 512, as agents export in production (not one request per span).
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter(live_server, make_key(acme, "ingest")), max_export_batch_size=512
        )
    )
    tracer = provider.get_tracer("big")
    from opentelemetry import trace as otel

    t0 = BASE_NS
    root = tracer.start_span(
        "invoke_agent crawler", start_time=t0, attributes={"gen_ai.operation.name": "invoke_agent"}
    )
    for step in range(100):
        s0 = t0 + step * 10**9
        step_span = tracer.start_span(
            f"step {step}", context=otel.set_span_in_context(root), start_time=s0
        )
        for i in range(19):
            op = "chat" if i % 2 == 0 else "execute_tool"
            child = tracer.start_span(
                f"{op} {i}",
                context=otel.set_span_in_context(step_span),
                start_time=s0 + i * 5 * 10**7,
                attributes={"gen_ai.operation.name": op},
            )
            child.end(end_time=s0 + (i + 1) * 5 * 10**7)
        step_span.end(end_time=s0 + 10**9)
    root.end(end_time=t0 + 100 * 10**9)
    provider.shutdown()
    trace_id = f"{root.get_span_context().trace_id:032x}"

    log_in(page, live_server.url, "alice@acme.test")
    started = time.monotonic()
    page.goto(f"{live_server.url}/t/acme/traces/{trace_id}/")
    expect(page.locator("#tree .span-row").first).to_be_visible()
    opened = time.monotonic() - started
    # Subtrees start folded: only the root and steps show, and rows arrive in chunks.
    rows = page.locator("#tree .span-row")
    visible = page.locator("#tree .span-row:visible")
    steps = page.locator('#tree .span-row[aria-level="2"]')
    expect(steps.first).to_have_attribute("aria-expanded", "false")
    assert rows.count() < 2001
    assert page.locator('#tree .span-row[aria-level="3"]:visible').count() == 0
    # Scrolling down loads the rest, still folded.
    for _ in range(30):
        if rows.count() == 2001:
            break
        page.locator("#tree").evaluate("t => t.scrollTop = t.scrollHeight")
        page.wait_for_timeout(150)
    expect(rows).to_have_count(2001)
    expect(visible).to_have_count(101)
    # Bars sit where their spans fall, also in the chunks htmx swapped in, with no style
    # attribute (the policy allows none): the last step starts at 99 % and lasts 1 %.
    cell = steps.last.locator(".span-bar-cell").bounding_box()
    bar = steps.last.locator(".span-bar").bounding_box()
    assert abs((bar["x"] - cell["x"]) / cell["width"] - 0.99) < 0.005, (bar, cell)
    assert abs(bar["width"] / cell["width"] - 0.01) < 0.005, (bar, cell)

    def indent(row):
        return float(
            row.locator(".span-name").evaluate("n => getComputedStyle(n).paddingLeft")[:-2]
        )

    assert indent(steps.last) - indent(rows.first) == 16  # one level deeper
    ticks = page.locator(".axis .tick")
    last = ticks.last.bounding_box()
    axis = page.locator(".axis").bounding_box()
    assert abs((last["x"] + last["width"] - axis["x"]) / axis["width"] - 1) < 0.02, (last, axis)
    # Unfold the last step and open one of its spans with the keyboard.
    steps.last.locator(".toggle").click()
    expect(visible).to_have_count(120)
    steps.last.click()
    page.locator("#tree").press("ArrowDown")
    expect(page.locator("#detail .detail-title h2")).to_have_text("chat 0")
    shot("06-big-trace")
    assert opened < 5, f"the 2,000-span trace took {opened:.1f} s to open"


def test_it_shows_a_new_tenant_how_to_send_its_first_trace(live_server, page, shot, acme):
    log_in(page, live_server.url, "alice@acme.test")
    card = page.locator(".onboarding")
    expect(card).to_contain_text("Send your first trace")
    expect(card).to_contain_text(f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT={live_server.url}/v1/traces")
    shot("07-empty-state")
    page.click("text=Create an ingest key")
    expect(page.locator("#exporter-env")).to_contain_text("Bearer%20fd_")
    shot("08-ingest-key-created")
