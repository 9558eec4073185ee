"""The console's runs and agents in Chromium, with a real Celery worker running the runs:
an owner (not a superuser) uploads the example agent, starts a run and watches it finish
live, opens its steps and its trace; a viewer sees no controls and is refused; another
tenant's run is not found."""

import io
import re
import tarfile
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from playwright.sync_api import expect

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services, tasks
from execution.models import Run
from tests.browser.conftest import log_in
from tests.execution.bundles import agent_with_bundle

# Runs go to the real worker of the execution tests (tests/workers.py: one per test run).
from tests.execution.conftest import QUEUES, worker  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calculator"
QUESTION = '{"question": "Use python {\\"code\\": \\"print(6 * 7)\\"}"}'
HOLD = QUEUES["inprocess"]


@pytest.fixture
def hold(settings):
    """Runs started from now on wait, queued, on a queue no worker reads."""
    settings.EXECUTION_QUEUE = HOLD
    yield
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(HOLD)


@pytest.fixture
def release(worker, settings):  # noqa: F811 - the imported fixture
    """release(run): hand a held run to the real worker. The test sees the page of a
    queued run first, every time, and then watches it change."""
    settings.EXECUTION_QUEUE = HOLD

    def hand_over(run_id: int, tenant_id: int):
        tasks.run_agent.apply_async(
            kwargs={"tenant_id": tenant_id, "run_id": run_id}, queue=QUEUES["run"]
        )

    yield hand_over
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(HOLD)


@pytest.fixture
def within_csp(page):
    """What the pages do needs nothing the Content-Security-Policy refuses (Chromium says
    so on the console: polling, out-of-band swaps and the forms must not)."""
    refused = []
    page.on("console", lambda m: "Content Security Policy" in m.text and refused.append(m.text))
    yield
    assert not refused, refused


def example_bundle(folder: Path) -> Path:
    path = folder / "calculator.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("flightdeck.toml", "agent.py"):
            tar.add(EXAMPLE / name, arcname=name)
    path.write_bytes(buf.getvalue())
    return path


def run_id_of(url: str) -> int:
    return int(re.search(r"/runs/(\d+)/", url).group(1))


def test_it_uploads_the_example_agent_runs_it_and_follows_it_live(
    live_server, page, shot, acme, release, tmp_path, within_csp
):
    base = f"{live_server.url}/t/acme"
    assert not acme.owner.is_superuser and not acme.owner.is_staff
    log_in(page, live_server.url, "alice@acme.test")
    expect(page).to_have_url(re.compile(r"/t/acme/traces/$"))
    page.locator(".mainnav a", has_text=re.compile("^Agents$")).click()  # not "Coding agents"
    expect(page).to_have_url(f"{base}/agents/")
    page.fill("#id_name", "calculator")
    page.click("#agent-create button[type=submit]")
    expect(page.locator("h1")).to_have_text("calculator")

    # A file that is no bundle: the form says so.
    junk = tmp_path / "notes.tar.gz"
    junk.write_bytes(b"just some notes")
    page.set_input_files("#id_bundle", str(junk))
    page.click("#bundle-upload button[type=submit]")
    expect(page.locator("#bundle-upload .form-error")).to_contain_text(
        "neither a .tar.gz nor a .zip"
    )
    page.set_input_files("#id_bundle", str(example_bundle(tmp_path)))
    page.click("#bundle-upload button[type=submit]")
    version = page.locator("details#v1")
    expect(version).to_contain_text("agent:main")
    expect(version).to_contain_text("python")
    expect(version.locator("table.attrs").first).to_contain_text("max_tool_calls")
    expect(version).to_contain_text('"question"')  # its input schema
    shot("10-agent")

    # Start a run: a typo in the JSON first, then the question.
    page.locator("a.button", has_text="Start a run").click()
    expect(page).to_have_url(f"{base}/runs/new/?agent=calculator")
    expect(page.locator("#id_max_tool_calls")).to_have_attribute("placeholder", "5")
    page.fill("#id_input", '{"question": 42')
    page.click("#run-start button[type=submit]")
    expect(page.locator("#run-start .field-error")).to_contain_text("The input is not valid JSON")
    page.fill("#id_input", '{"question": 42}')
    page.click("#run-start button[type=submit]")
    expect(page.locator("#run-start .form-error")).to_contain_text("42 is not of type 'string'")
    shot("11-start-refused")
    page.fill("#id_input", QUESTION)
    page.fill("#id_max_steps", "12")
    page.click("#run-start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/t/acme/runs/\d+/$"))
    run_id = run_id_of(page.url)
    status = page.locator("#run-live .run-status")
    expect(status).to_have_text("queued")
    expect(page.locator("#cancel-run")).to_be_visible()
    shot("12-run-queued")

    # The worker takes it; the page follows without loading again.
    page.evaluate("window.sameDocument = true")
    release(run_id, acme.id)
    expect(status).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("window.sameDocument") is True
    expect(page.locator("#cancel-run")).to_have_count(0)
    expect(page.locator("#run-output")).to_contain_text("The tool returned: 42")
    expect(page.locator(".usage meter")).to_have_count(4)
    expect(page.locator(".usage")).to_contain_text("12")  # the steps cap we typed
    steps = page.locator("#steps details.step")
    with tenant_scope(acme):
        run = Run.objects.get(pk=run_id)
    expect(steps).to_have_count(run.step_count)
    assert run.limits["max_steps"] == 12
    shot("13-run-succeeded")

    # Open the tool step: the whole request and result, as the steps API has them.
    tool_step = steps.filter(has=page.locator(".step-kind", has_text=re.compile("^tool$")))
    expect(tool_step).to_have_count(1)
    tool_step.locator("summary").click()
    expect(tool_step.locator(".step-request")).to_contain_text('"code": "print(6 * 7)"')
    expect(tool_step.locator(".step-result")).to_contain_text('"output": "42\\n"')
    shot("14-run-step")

    # Its trace, and from the trace back to the run.
    page.click("#run-trace")
    expect(page).to_have_url(re.compile(rf"/t/acme/traces/{run.trace_id}/$"))
    expect(page.locator("#tree .span-row")).to_have_count(4)
    shot("15-run-trace")
    page.click("#trace-run")
    expect(page).to_have_url(f"{base}/runs/{run_id}/")

    # The list follows a running row live too.
    page.goto(f"{base}/runs/new/?agent=calculator")
    page.fill("#id_input", QUESTION)
    page.click("#run-start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/t/acme/runs/\d+/$"))
    second = run_id_of(page.url)
    page.locator(".mainnav a", has_text=re.compile("^Runs$")).click()
    rows = page.locator("tr.run-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-run", str(second))
    expect(rows.first.locator(".run-status")).to_have_text("queued")
    expect(rows.nth(1).locator(".run-status")).to_have_text("succeeded")
    page.evaluate("window.sameDocument = true")
    release(second, acme.id)
    expect(rows.first.locator(".run-status")).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("window.sameDocument") is True
    page.select_option("#run-filters select[name=status]", "succeeded")
    expect(page).to_have_url(re.compile(r"/runs/\?status=succeeded"))
    expect(rows).to_have_count(2)
    shot("16-runs")


def test_it_shows_a_viewer_no_controls_refuses_their_posts_and_hides_other_tenants(
    live_server, chromium, page, shot, acme, acme_viewer, globex, hold, within_csp
):
    agent = agent_with_bundle(
        acme,
        name="calculator",
        code=(EXAMPLE / "agent.py").read_text(),
        manifest=(EXAMPLE / "flightdeck.toml").read_text(),
    )
    stranger = agent_with_bundle(globex, name="calculator", code="def main(ctx, input):\n  pass\n")
    runs = {}
    for tenant, which in ((acme, agent), (globex, stranger)):
        with tenant_scope(tenant):
            runs[tenant.slug] = services.run_create(
                tenant=tenant,
                agent=which,
                version=None,
                input={},
                limits=None,
                actor=Actor.system(),
            ).pk
    base = f"{live_server.url}/t/acme"

    log_in(page, live_server.url, "bob@acme.test")
    expect(page).to_have_url(re.compile(r"/t/acme/traces/$"))
    page.goto(f"{base}/runs/")
    expect(page.locator("tr.run-row")).to_have_count(1)
    expect(page.locator("a", has_text="Start a run")).to_have_count(0)
    page.goto(f"{base}/runs/{runs['acme']}/")
    expect(page.locator("#run-live .run-status")).to_have_text("queued")
    expect(page.locator("#cancel-run")).to_have_count(0)
    shot("17-run-as-viewer")
    page.goto(f"{base}/runs/new/")
    expect(page.locator("#run-start")).to_have_count(0)
    expect(page.locator(".notice-error")).to_contain_text("may read runs but not start them")
    page.goto(f"{base}/agents/")
    expect(page.locator("tr.agent-row")).to_have_count(1)
    expect(page.locator("#agent-create")).to_have_count(0)
    page.goto(f"{base}/agents/{agent.pk}/")
    expect(page.locator("details#v1")).to_contain_text("agent:main")
    expect(page.locator("#bundle-upload")).to_have_count(0)

    # The same POSTs the hidden controls would send, with the session and its CSRF token.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": token}
    posts = [
        (f"{base}/runs/{runs['acme']}/cancel", {}),
        (f"{base}/runs/new/", {"agent": "calculator", "input": QUESTION}),
        (f"{base}/agents/", {"name": "mine"}),
        (f"{base}/agents/{agent.pk}/versions", {}),
    ]
    for url, form in posts:
        response = page.request.post(url, form=form, headers=headers)
        assert response.status == 403, (url, response.status)
        assert "may not run agents" in response.text()
    with tenant_scope(acme):
        assert Run.objects.get(pk=runs["acme"]).status == "queued"
        assert Run.objects.count() == 1

    # Another tenant's run is not found, whoever asks.
    owner = chromium.new_context()
    alice = owner.new_page()
    log_in(alice, live_server.url, "alice@acme.test")
    expect(alice).to_have_url(re.compile(r"/t/acme/traces/$"))
    for url in (
        f"{base}/runs/{runs['globex']}/",
        f"{live_server.url}/t/globex/runs/{runs['globex']}/",
    ):
        assert alice.goto(url).status == 404, url
    # What the viewer could not do, the owner can: cancel the queued run.
    alice.goto(f"{base}/runs/{runs['acme']}/")
    alice.click("#cancel-run")
    expect(alice.locator("#run-live .run-status")).to_have_text("stopped · cancelled")
    expect(alice.locator("#cancel-run")).to_have_count(0)
    owner.close()
