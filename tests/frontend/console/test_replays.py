"""Replay on the run page: the Replay button, forking from a step, the side-by-side
view, the call in doubt, roles and tenancy."""

from controlplane.tenancy import tenant_scope
from execution.models import Run
from execution.testing import agent_with_bundle, run_now
from replay.models import JournalStep, RunLink

AGENT = "def main(ctx, input):\n    return [ctx.random(), ctx.tool('echo', n=1)]\n"
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n'


def source_run(acme):
    run = run_now(acme, agent_with_bundle(acme, name="src", code=AGENT, manifest=MANIFEST))
    assert run.status == "succeeded", run.error
    return run


def test_it_replays_from_the_run_page_and_shows_both_side_by_side(client, acme, transactional_db):
    source = source_run(acme)
    client.force_login(acme.owner)
    page = client.get(f"/t/acme/runs/{source.pk}/").content.decode()
    assert 'id="replay-run"' in page
    response = client.post(f"/t/acme/runs/{source.pk}/replay")
    link = RunLink.all_tenants.get(source=source)
    assert response.status_code == 302
    assert response["Location"] == f"/t/acme/runs/{source.pk}/compare/{link.run_id}/"
    compare = client.get(response["Location"]).content.decode()
    # The replay is queued: nothing to compare yet, and the view polls.
    assert 'hx-trigger="every 1s"' in compare and 'id="cmp-1"' in compare
    assert 'First differing step: <a href="#cmp-1">1</a>' in compare
    replay_page = client.get(f"/t/acme/runs/{link.run_id}/").content.decode()
    assert f'Replay of <a href="/t/acme/runs/{source.pk}/">run #{source.pk}</a>' in replay_page


def test_it_forks_from_a_step_and_refuses_bad_json_naming_the_field(client, acme, transactional_db):
    source = source_run(acme)
    client.force_login(acme.owner)
    step = client.get(f"/t/acme/runs/{source.pk}/", {"step": 2}, HTTP_HX_REQUEST="true")
    assert "Fork from here" in step.content.decode()
    url = f"/t/acme/runs/{source.pk}/fork"
    bad = client.post(url, {"step": "2", "kind": "result", "override": "{nope"})
    assert bad.status_code == 400 and "override: not JSON" in bad.content.decode()
    missing = client.post(url, {"step": "9", "kind": "result", "override": "1"})
    assert missing.status_code == 400 and "no step 9" in missing.content.decode()
    made = client.post(url, {"step": "2", "kind": "result", "override": '{"n": 2}'})
    assert made.status_code == 302
    link = RunLink.all_tenants.get(source=source)
    assert (link.kind, link.fork_step, link.override) == ("fork", 2, {"result": {"n": 2}})


def test_it_shows_the_call_in_doubt_and_settles_it(client, acme, transactional_db):
    source = source_run(acme)
    step = JournalStep.all_tenants.get(run=source, kind="tool")
    JournalStep.all_tenants.filter(pk=step.pk).update(done=False, result=None)
    Run.all_tenants.filter(pk=source.pk).update(status="needs_reconciliation", finished_at=None)
    client.force_login(acme.owner)
    page = client.get(f"/t/acme/runs/{source.pk}/").content.decode()
    assert 'id="reconcile"' in page and "A call is in doubt" in page
    assert '<span class="mono">echo</span>' in page
    response = client.post(
        f"/t/acme/runs/{source.pk}/reconcile", {"action": "result", "result": '{"n": 5}'}
    )
    assert response.status_code == 302
    with tenant_scope(acme):
        step.refresh_from_db()
    assert (step.done, step.result) == (True, {"n": 5})
    assert Run.all_tenants.get(pk=source.pk).status == "queued"


def test_it_keeps_viewers_and_strangers_out(client, acme, acme_viewer, globex, transactional_db):
    source = source_run(acme)
    client.force_login(acme_viewer)
    assert 'id="replay-run"' not in client.get(f"/t/acme/runs/{source.pk}/").content.decode()
    assert client.post(f"/t/acme/runs/{source.pk}/replay").status_code == 403
    client.force_login(globex.owner)
    assert client.post(f"/t/globex/runs/{source.pk}/replay").status_code == 404
    fork = client.post(f"/t/globex/runs/{source.pk}/fork", {"step": "1", "override": "1"})
    assert fork.status_code == 404
    assert client.get(f"/t/globex/runs/{source.pk}/compare/{source.pk}/").status_code == 404
