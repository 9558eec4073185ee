"""Fork a run from one of its steps on the run page, and see both runs side by side."""

import re

import pytest
from playwright.sync_api import expect

from execution.testing import agent_with_bundle, run_now
from tests.browser.conftest import log_in
from tests.execution.conftest import worker  # noqa: F401 - runs the fork

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
AGENT = """
def main(ctx, input):
    seed = ctx.random()
    reply = ctx.llm.messages(messages=[{"role": "user", "content": "hello"}], max_tokens=50)
    echoed = ctx.tool("echo", text=reply.content[0].text)
    return {"seed": seed, "text": echoed["text"]}
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n'
ANSWER = '{"role": "assistant", "content": [{"type": "text", "text": "forked here"}]}'


def test_it_forks_from_a_step_and_shows_the_runs_side_by_side(
    live_server,
    page,
    shot,
    acme,
    worker,  # noqa: F811 - the imported fixture
    settings,
    messages_api,
):
    from execution import llm
    from tests.execution.conftest import QUEUES

    settings.EXECUTION_LLM_BASE_URL = messages_api.url  # the source runs in this process
    settings.EXECUTION_LLM_API_KEY = "local-test-key"
    llm._client.cache_clear()
    agent = agent_with_bundle(acme, name="forkable", code=AGENT, manifest=MANIFEST)
    # The `worker` fixture sends runs to the real worker: queued there, the source would
    # race this process's run_now for its claim, and the worker sometimes won it.
    settings.EXECUTION_QUEUE = QUEUES["inprocess"]
    source = run_now(acme, agent)
    assert source.status == "succeeded", source.error
    settings.EXECUTION_QUEUE = QUEUES["run"]  # the fork goes to the real worker
    refused = []
    page.on("console", lambda m: "Content Security Policy" in m.text and refused.append(m.text))
    log_in(page, live_server.url, "alice@acme.test")
    page.goto(f"{live_server.url}/t/acme/runs/{source.pk}/")
    expect(page.locator("#replay-run")).to_be_visible()
    page.locator("#step-2 summary.step-row").click()  # the LLM call
    fork = page.locator("#step-2 details.fork")
    fork.locator("summary").click()
    fork.locator("textarea[name=override]").fill(ANSWER)
    shot("30-fork-from-step")
    fork.locator("button.fork-submit").click()
    expect(page).to_have_url(re.compile(rf"/t/acme/runs/{source.pk}/compare/\d+/$"))
    expect(page.locator("#first-difference")).to_contain_text(
        "First differing step: 2", timeout=60_000
    )
    expect(page.locator("#cmp-2")).to_have_class(re.compile("compare-first"))
    expect(page.locator("#cmp-1")).not_to_have_class(re.compile("compare-differs"))
    expect(page.locator("#compare .run-status").nth(1)).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#cmp-3")).to_contain_text("forked here")
    shot("31-side-by-side")
    assert not refused, refused
