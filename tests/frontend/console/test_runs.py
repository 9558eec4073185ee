"""The console's runs pages through Django's test client: the list and its filters, one
run with its journal, starting and cancelling, roles and tenancy."""

import html as html_text
import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.models import AuditEvent
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.api import JournalStepSerializer
from execution.models import Run
from replay.models import JournalStep
from tests.execution.bundles import agent_with_bundle, make_bundle
from tests.frontend.console.pagetext import visible

HX = {"HTTP_HX_REQUEST": "true"}
AGENT = "def main(ctx, input):\n    return input\n"
MANIFEST = """entrypoint = "agent:main"
tools = ["echo"]
[limits]
max_steps = 20
max_tool_calls = 4
[input_schema]
type = "object"
required = ["question"]
[input_schema.properties.question]
type = "string"
"""


def start(tenant, agent, **fields):
    with tenant_scope(tenant):
        return services.run_create(
            tenant=tenant,
            agent=agent,
            version=fields.pop("version", None),
            input=fields.pop("input", {"question": "?"}),
            limits=fields.pop("limits", None),
            actor=Actor.system(),
        )


def finish(run, **fields):
    Run.all_tenants.filter(pk=run.pk).update(**fields)
    run.refresh_from_db()
    return run


@pytest.fixture
def asker(acme):
    return agent_with_bundle(acme, name="asker", code=AGENT, manifest=MANIFEST)


@pytest.fixture
def journal(acme, asker):
    """A running run with three steps: an LLM call, a tool call, and a failed tool call."""
    now = timezone.now()
    run = start(acme, asker)
    run = finish(
        run,
        status="running",
        started_at=now - timedelta(seconds=3),
        step_count=3,
        tool_call_count=2,
        input_tokens=120,
        output_tokens=30,
        trace_id="ab" * 16,
    )
    steps = [
        (
            "llm.messages",
            {"model": "claude-sonnet-5", "max_tokens": 512},
            {
                "content": [
                    {"type": "text", "text": "Let me compute."},
                    {"type": "tool_use", "name": "echo", "id": "t1", "input": {"x": 1}},
                ],
                "usage": {"input_tokens": 120, "output_tokens": 30},
            },
            False,
        ),
        ("tool", {"name": "echo", "arguments": {"x": 1}}, {"output": "echoed 1"}, False),
        (
            "tool",
            {"name": "echo", "arguments": {}},
            {"type": "tool_error", "message": "x is required"},
            True,
        ),
    ]
    for n, (kind, request, result, is_error) in enumerate(steps, start=1):
        JournalStep.all_tenants.create(
            tenant=acme,
            run=run,
            step=n,
            kind=kind,
            request_hash=f"h{n}",
            request=request,
            result=result,
            is_error=is_error,
            duration_ms=12.5,
        )
    return run


def test_it_lists_runs_newest_first_with_status_agent_and_counts(client, acme, asker):
    older = start(acme, asker)
    now = timezone.now()
    finish(
        older,
        status="stopped",
        stop_reason="steps",
        started_at=now - timedelta(seconds=5),
        finished_at=now,
        step_count=20,
        tool_call_count=3,
        input_tokens=1500,
        output_tokens=42,
    )
    newer = start(acme, asker)
    client.force_login(acme.owner)
    resp = client.get("/t/acme/runs/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert html.index(f'data-run="{newer.pk}"') < html.index(f'data-run="{older.pk}"')
    row = re.search(
        rf'<tr class="run-row status-stopped" data-run="{older.pk}">.*?</tr>', html, re.S
    )
    text = visible(row.group(0))
    assert "stopped · steps" in text and "asker v1" in text
    assert "5.00 s" in text and "20 3 1.5k / 42" in text
    assert 'href="/t/acme/runs/new/"' in html  # the owner may start runs
    assert "{#" not in html and "{%" not in html  # no template comment shows as text


def test_it_filters_runs_by_status_and_agent_and_refuses_an_unknown_status(client, acme, asker):
    other = agent_with_bundle(acme, name="other", code=AGENT)
    queued = start(acme, asker)
    done = finish(start(acme, asker), status="succeeded", finished_at=timezone.now())
    theirs = start(acme, other)
    client.force_login(acme.owner)

    def shown(**params):
        html = client.get("/t/acme/runs/", params, **HX).content.decode()
        return {int(i) for i in re.findall(r'data-run="(\d+)"', html)}

    assert shown() == {queued.pk, done.pk, theirs.pk}
    assert shown(status="succeeded") == {done.pk}
    assert shown(agent="other") == {theirs.pk}
    assert shown(status="queued", agent="asker") == {queued.pk}
    bad = client.get("/t/acme/runs/", {"status": "exploded"})
    assert bad.status_code == 400
    assert (
        "status must be one of queued, running, succeeded, failed, stopped" in bad.content.decode()
    )


def test_it_polls_the_list_while_a_run_is_active_and_stops_when_none_is(client, acme, asker):
    run = start(acme, asker)
    client.force_login(acme.owner)
    fragment = client.get("/t/acme/runs/", {"agent": "asker"}, **HX).content.decode()
    assert "<html" not in fragment and fragment.lstrip().startswith('<div id="run-results"')
    assert 'hx-trigger="every 1s"' in fragment and 'hx-get="/t/acme/runs/?agent=asker"' in fragment
    finish(run, status="succeeded", finished_at=timezone.now())
    fragment = client.get("/t/acme/runs/", {"agent": "asker"}, **HX).content.decode()
    assert "hx-trigger" not in fragment and "succeeded" in fragment


def test_it_shows_a_run_with_its_journal_and_limits_against_their_caps(client, acme, journal):
    client.force_login(acme.owner)
    html = client.get(f"/t/acme/runs/{journal.pk}/").content.decode()
    assert f"Run #{journal.pk}" in html and "running" in html
    assert f'href="/t/acme/traces/{"ab" * 16}/"' in html
    text = visible(html)
    assert '"question": "?"' in text  # the input
    # Limits used against their caps: the manifest's and the platform's.
    assert '<meter min="0" max="20" high="16.0" value="3"' in html
    assert '<meter min="0" max="4" high="3.2" value="2"' in html
    assert re.search(r'<meter min="0" max="\d+" high="[\d.]+" value="150"', html)  # tokens
    assert "3 / 20" in text and "150 / 200k" in text and "s / 120s" in text
    assert "Wall time" in text
    assert (
        "1 llm.messages claude-sonnet-5, max 512 tokens Let me compute. → echo [120 in / 30 out]"
        in text
    )
    assert '2 tool echo({"x": 1}) echoed 1' in text
    assert "3 tool echo({}) tool_error: x is required" in text
    # The live part polls for steps after the last one shown.
    assert f'hx-get="/t/acme/runs/{journal.pk}/?after=3" hx-trigger="every 1s"' in html


def test_it_opens_a_step_whole_as_the_steps_api_returns_it(client, acme, journal):
    client.force_login(acme.owner)
    fragment = client.get(f"/t/acme/runs/{journal.pk}/", {"step": 1}, **HX).content.decode()
    with tenant_scope(acme):
        api = JournalStepSerializer(JournalStep.objects.get(run=journal, step=1)).data
    pres = re.findall(r"<pre[^>]*>(.*?)</pre>", fragment, re.S)
    assert [json.loads(html_text.unescape(p)) for p in pres] == [api["request"], api["result"]]
    assert client.get(f"/t/acme/runs/{journal.pk}/", {"step": 9}, **HX).status_code == 404


def test_it_sends_the_steps_a_running_page_has_not_seen_and_stops_polling_at_the_end(
    client, acme, journal
):
    client.force_login(acme.owner)
    live = client.get(f"/t/acme/runs/{journal.pk}/", {"after": 2}, **HX).content.decode()
    assert '<div hx-swap-oob="beforeend:#steps">' in live
    assert re.findall(r'id="step-(\d+)"', live) == ["3"]
    assert "?after=3" in live and 'hx-trigger="every 1s"' in live
    nothing_new = client.get(f"/t/acme/runs/{journal.pk}/", {"after": 3}, **HX).content.decode()
    assert "hx-swap-oob" not in nothing_new
    finish(journal, status="succeeded", finished_at=timezone.now(), output={"answer": 42})
    done = client.get(f"/t/acme/runs/{journal.pk}/", {"after": 3}, **HX).content.decode()
    assert "hx-trigger" not in done and "Cancel run" not in done
    assert '"answer": 42' in visible(done) and "Duration" in done


def test_it_sends_a_long_journal_in_chunks(client, acme, journal, monkeypatch):
    from frontend.console import runs

    monkeypatch.setattr(runs, "STEP_CHUNK", 2)
    client.force_login(acme.owner)
    url = f"/t/acme/runs/{journal.pk}/"
    # Running: the first chunk, then the page's polling brings the rest.
    page = client.get(url).content.decode()
    assert re.findall(r'id="step-(\d+)"', page) == ["1", "2"] and "steps-more" not in page
    assert f'hx-get="{url}?after=2"' in page
    # Finished: the rest arrives as the journal scrolls, a chunk at a time.
    finish(journal, status="failed", finished_at=timezone.now(), error="boom")
    page = client.get(url).content.decode()
    assert re.findall(r'id="step-(\d+)"', page) == ["1", "2"] and 'hx-trigger="every' not in page
    assert f'hx-get="{url}?after=2&amp;more=1" hx-trigger="intersect once"' in page
    rest = client.get(url, {"after": 2, "more": 1}, **HX).content.decode()
    assert re.findall(r'id="step-(\d+)"', rest) == ["3"] and "steps-more" not in rest
    # A poll that sees the run finish with steps still to send leaves the same trigger.
    last = client.get(url, {"after": 0}, **HX).content.decode()
    assert re.findall(r'id="step-(\d+)"', last) == ["1", "2"] and "after=2&amp;more=1" in last


def test_it_starts_a_run_through_the_service_with_the_person_as_actor(client, acme, asker):
    client.force_login(acme.owner)
    form = client.get("/t/acme/runs/new/", {"agent": "asker"}).content.decode()
    assert 'placeholder="20"' in form  # max_steps from the manifest, shown as the default
    resp = client.post(
        "/t/acme/runs/new/",
        {"agent": "asker", "version": "1", "input": '{"question": "6 * 7?"}', "max_steps": "5"},
    )
    assert resp.status_code == 302
    run_id = int(re.search(r"/t/acme/runs/(\d+)/$", resp["Location"]).group(1))
    with tenant_scope(acme):
        run = Run.objects.get(pk=run_id)
        event = AuditEvent.objects.get(action="run.create", target_id=str(run_id))
    assert run.input == {"question": "6 * 7?"} and run.limits["max_steps"] == 5
    assert run.limits["max_tool_calls"] == 4 and run.version.version == 1
    assert event.actor_user == acme.owner


def test_it_serves_an_agents_versions_and_limits_when_the_agent_changes(client, acme, asker):
    data = make_bundle({"flightdeck.toml": 'entrypoint = "agent:main"\n', "agent.py": AGENT})
    with tenant_scope(acme):
        services.agent_version_create(
            agent=asker, filename="b.tar.gz", data=data, actor=Actor.system()
        )
    client.force_login(acme.owner)
    fragment = client.get("/t/acme/runs/new/", {"agent": "asker"}, **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="agent-fields"')
    # Its limits come along out of band: v2 (the latest) has no max_steps of its own.
    assert '<fieldset class="limits" id="run-limits" hx-swap-oob="true">' in fragment
    assert 'name="max_steps" placeholder="200"' in fragment
    assert (
        '<option value="2">v2</option>' in fragment and '<option value="1">v1</option>' in fragment
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"input": "{question: 1}"}, "The input is not valid JSON: Expecting property name"),
        ({"input": "[" * 5000 + "]" * 5000}, "The input is nested too deeply."),
        ({"input": "[" * 70 + "]" * 70}, "The input is nested more than 64 levels deep."),
        ({"input": '{"question": "a\\u0000b"}'}, "The input must not contain NUL characters."),
        ({"input": '{"question": 7}'}, "refuses this input['question']: 7 is not of type"),
        ({"input": "{}"}, "refuses this input: 'question' is a required property"),
        ({"max_steps": "lots"}, "max_steps must be a number, not 'lots'"),
        ({"memory_mb": "nan"}, "memory_mb must be a number"),
        ({"max_steps": "999999999"}, "is above the platform maximum"),
        ({"wall_seconds": "-3"}, "wall_seconds must be a positive whole number"),
        ({"version": "9"}, "Select a valid choice. 9 is not one of the available choices."),
        ({"agent": "ghost"}, "Select a valid choice. ghost is not one of the available choices."),
        ({"agent": ""}, "Pick an agent to run."),
    ],
)
def test_it_refuses_bad_start_input_saying_what_is_wrong(client, acme, asker, fields, says):
    client.force_login(acme.owner)
    data = {"agent": "asker", "version": "", "input": '{"question": "?"}', **fields}
    resp = client.post("/t/acme/runs/new/", data)
    assert resp.status_code == 400
    html = resp.content.decode()
    assert says in visible(html) and 'id="run-start"' in html
    if fields.get("input", "").startswith("{q"):
        assert "{question: 1}</textarea>" in html  # what was typed stays in the form
    with tenant_scope(acme):
        assert not Run.objects.exists()


def test_it_cancels_a_run_and_says_so_when_it_has_already_finished(client, acme, asker):
    run = start(acme, asker)
    client.force_login(acme.owner)
    page = client.get(f"/t/acme/runs/{run.pk}/").content.decode()
    assert f'action="/t/acme/runs/{run.pk}/cancel"' in page
    resp = client.post(f"/t/acme/runs/{run.pk}/cancel")
    assert resp.status_code == 302 and resp["Location"] == f"/t/acme/runs/{run.pk}/"
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == ("stopped", "cancelled")
    again = client.post(f"/t/acme/runs/{run.pk}/cancel")
    assert again.status_code == 409
    assert f"run {run.pk} has already finished (stopped)" in visible(again.content.decode())


def test_it_shows_a_running_run_as_cancelling_until_its_worker_stops_it(client, acme, journal):
    client.force_login(acme.owner)
    resp = client.post(f"/t/acme/runs/{journal.pk}/cancel")
    assert resp.status_code == 302
    journal.refresh_from_db()
    assert journal.cancel_requested and journal.status == "running"
    page = client.get(f"/t/acme/runs/{journal.pk}/").content.decode()
    assert "running · cancelling" in visible(page) and 'id="cancel-run"' not in page
    assert 'hx-trigger="every 1s"' in page  # it goes on polling until the run has stopped


def test_it_lets_a_viewer_read_runs_but_not_start_or_cancel_them(
    client, acme, acme_viewer, journal
):
    client.force_login(acme_viewer)
    listing = client.get("/t/acme/runs/").content.decode()
    assert f'data-run="{journal.pk}"' in listing and "/t/acme/runs/new/" not in listing
    page = client.get(f"/t/acme/runs/{journal.pk}/")
    assert page.status_code == 200 and "Cancel run" not in page.content.decode()
    form = client.get("/t/acme/runs/new/").content.decode()
    assert 'id="run-start"' not in form and "may read runs but not start them" in form
    assert client.post(f"/t/acme/runs/{journal.pk}/cancel").status_code == 403
    refused = client.post("/t/acme/runs/new/", {"agent": "asker", "input": '{"question": "?"}'})
    assert refused.status_code == 403 and b"may not run agents" in refused.content
    with tenant_scope(acme):
        assert Run.objects.count() == 1 and Run.objects.get().status == "running"


def test_it_answers_a_bad_step_number_with_a_400_naming_it(client, acme, journal):
    client.force_login(acme.owner)
    url = f"/t/acme/runs/{journal.pk}/"
    for name, raw in [("step", "²"), ("after", "²"), ("after", "9" * 30), ("step", "-1")]:
        resp = client.get(url, {name: raw}, **HX)
        assert resp.status_code == 400, (name, raw)
        assert resp.content.decode().startswith(f"{name}: must be a whole number"), resp.content
    assert client.get("/t/acme/runs/", {"page": "²"}).status_code == 200  # the first page
    assert client.get("/t/acme/runs/99999999999999999999/").status_code == 404
    assert client.get("/t/acme/agents/99999999999999999999/").status_code == 404


def test_it_answers_404_for_another_tenants_run(client, acme, globex):
    stranger = agent_with_bundle(globex, name="asker", code=AGENT, manifest=MANIFEST)
    theirs = start(globex, stranger)
    client.force_login(acme.owner)
    assert client.get(f"/t/acme/runs/{theirs.pk}/").status_code == 404
    assert client.get(f"/t/acme/runs/{theirs.pk}/", {"step": 1}, **HX).status_code == 404
    assert client.get(f"/t/acme/runs/{theirs.pk}/", {"after": 0}, **HX).status_code == 404
    assert client.post(f"/t/acme/runs/{theirs.pk}/cancel").status_code == 404
    assert client.get(f"/t/globex/runs/{theirs.pk}/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "queued"


def test_it_links_a_trace_to_its_run_and_only_to_a_run_of_the_tenant(
    client, acme, globex, asker, django_capture_on_commit_callbacks
):
    from tests.tracing.searchdata import in_process_provider

    mine = start(acme, asker)
    theirs = start(globex, agent_with_bundle(globex, name="asker", code=AGENT, manifest=MANIFEST))
    with django_capture_on_commit_callbacks(execute=True):
        provider = in_process_provider(acme)
        tracer = provider.get_tracer("test")
        ids = {}
        for name, run in (("mine", mine), ("theirs", theirs)):
            with tracer.start_as_current_span(
                "invoke_agent asker", attributes={"flightdeck.run.id": str(run.pk)}
            ) as span:
                ids[name] = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
    finish(mine, trace_id=ids["mine"])
    finish(theirs, trace_id=ids["theirs"])
    client.force_login(acme.owner)
    page = client.get(f"/t/acme/traces/{ids['mine']}/").content.decode()
    assert f'href="/t/acme/runs/{mine.pk}/"' in page and 'id="trace-run"' in page
    assert 'id="trace-run"' not in client.get(f"/t/acme/traces/{ids['theirs']}/").content.decode()
    # A span of acme's naming globex's run (any exporter can set the attribute): no link.
    other = client.get(f"/t/acme/traces/{ids['theirs']}/").content.decode()
    assert other.count("/runs/") == 1  # the top navigation's, and no run link
