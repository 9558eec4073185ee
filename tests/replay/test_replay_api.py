"""Replay and fork through the REST API, on a real worker."""

import pytest

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.testing import agent_with_bundle, make_bundle
from tests.execution.conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
AGENT = """
def main(ctx, input):
    seed = ctx.random()
    when = ctx.now()
    reply = ctx.llm.messages(messages=[{"role": "user", "content": PROMPT}], max_tokens=50)
    echoed = ctx.tool("echo", text=reply.content[0].text)
    ctx.state["seed"] = seed
    return {"seed": seed, "when": when, "text": echoed["text"], "kept": ctx.state["seed"]}
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n'


def code(prompt: str) -> str:
    return f"PROMPT = {prompt!r}\n" + AGENT


def ended(api, key, run_id, timeout=60):
    def check():
        run = api.get(f"/api/v1/runs/{run_id}", key=key).json()
        return run if run["status"] not in ("queued", "running") else None

    return wait_for(check, timeout=timeout)


def operations(trace_id: str, tenant) -> list[str]:
    from tracing.models import Span

    with tenant_scope(tenant):
        spans = Span.objects.filter(trace_id=bytes.fromhex(trace_id))
        return sorted(spans.values_list("labels__operation", flat=True))


@pytest.fixture
def source(api, acme, make_key, worker, messages_api):
    key = make_key(acme, "read", "write")
    agent = agent_with_bundle(acme, name="replayable", code=code("hello"), manifest=MANIFEST)
    started = api.post("/api/v1/runs", key=key, json={"agent": "replayable", "input": {}})
    run = ended(api, key, started.json()["id"])
    assert run["status"] == "succeeded", run
    run["key"], run["agent"] = key, agent
    return run


def test_it_replays_a_run_without_calling_anything_upstream(api, acme, source, messages_api):
    key, calls = source["key"], messages_api.requests
    started = api.post(f"/api/v1/runs/{source['id']}/replay", key=key, json={})
    assert started.status_code == 202, started.text
    replay = ended(api, key, started.json()["id"])
    assert replay["status"] == "succeeded", replay
    assert replay["output"] == source["output"]  # clock and randomness included
    assert messages_api.requests == calls
    lineage = api.get(f"/api/v1/runs/{replay['id']}/lineage", key=key).json()
    assert (lineage["source"], lineage["kind"], lineage["divergence"]) == (
        source["id"],
        "replay",
        None,
    )
    of_source = api.get(f"/api/v1/runs/{source['id']}/lineage", key=key).json()
    assert of_source["derived"] == [{"run": replay["id"], "kind": "replay"}]
    wait_for(lambda: operations(replay["trace_id"], acme) == operations(source["trace_id"], acme))
    steps = api.get(f"/api/v1/runs/{replay['id']}/steps", key=key).json()
    assert [s["kind"] for s in steps] == [
        s["kind"] for s in api.get(f"/api/v1/runs/{source['id']}/steps", key=key).json()
    ]


def test_it_stops_a_replay_on_another_version_at_the_first_changed_call(api, acme, source):
    key = source["key"]
    with tenant_scope(acme):
        services.agent_version_create(
            agent=source["agent"],
            filename="v2.tar.gz",
            data=make_bundle({"flightdeck.toml": MANIFEST, "agent.py": code("goodbye")}),
            actor=Actor.system(),
        )
    started = api.post(f"/api/v1/runs/{source['id']}/replay", key=key, json={"version": 2})
    assert started.status_code == 202, started.text
    replay = ended(api, key, started.json()["id"])
    assert replay["status"] == "diverged", replay
    report = api.get(f"/api/v1/runs/{replay['id']}/lineage", key=key).json()["divergence"]
    # random, now, then the LLM call whose prompt changed.
    assert report["step"] == 3 and report["recorded_step"] == 3
    assert report["recorded_request"]["op"] == report["request"]["op"] == "llm.messages"
    old, new = report["recorded_request"]["args"], report["request"]["args"]
    # The recorded conversation is read back from the source's chat span: the diff shows
    # the message that changed, in words.
    assert old["messages"] != new["messages"], report
    changed = [line for line in report["diff"].splitlines() if line[:1] in "+-"]
    assert any(line.startswith("+") and "goodbye" in line for line in changed), report["diff"]
    assert any(line.startswith("-") and "hello" in line for line in changed), report["diff"]
    events = api.get(f"/api/v1/runs/{replay['id']}/events", key=key).json()
    assert [e["kind"] for e in events] == ["diverged"]


def test_it_forks_a_run_with_a_given_result(api, source, messages_api):
    key, calls = source["key"], messages_api.requests
    answer = {"role": "assistant", "content": [{"type": "text", "text": "forked"}]}
    started = api.post(
        f"/api/v1/runs/{source['id']}/fork", key=key, json={"step": 3, "result": answer}
    )
    assert started.status_code == 202, started.text
    fork = ended(api, key, started.json()["id"])
    assert fork["status"] == "succeeded", fork
    assert fork["output"]["seed"] == source["output"]["seed"]  # steps before 3: the journal
    assert fork["output"]["text"] == "forked"  # step 3 overridden; the echo after it live
    assert messages_api.requests == calls
    lineage = api.get(f"/api/v1/runs/{fork['id']}/lineage", key=key).json()
    assert (lineage["source"], lineage["kind"], lineage["fork_step"]) == (source["id"], "fork", 3)


def test_it_forks_a_run_with_an_edited_request_run_live(api, source, messages_api):
    key, calls = source["key"], messages_api.requests
    edited = {"messages": [{"role": "user", "content": "something else"}]}
    started = api.post(
        f"/api/v1/runs/{source['id']}/fork", key=key, json={"step": 3, "request": edited}
    )
    fork = ended(api, key, started.json()["id"])
    assert fork["status"] == "succeeded", fork
    assert fork["output"]["when"] == source["output"]["when"]
    assert fork["output"]["text"] == "You said: something else"
    assert source["output"]["text"] == "You said: hello"
    assert messages_api.requests == calls + 1


def test_it_refuses_a_fork_it_cannot_make_naming_the_field(api, source):
    key, url = source["key"], f"/api/v1/runs/{source['id']}/fork"
    neither = api.post(url, key=key, json={"step": 3})
    assert neither.status_code == 400 and "result" in neither.text
    missing = api.post(url, key=key, json={"step": 99, "result": 1})
    assert missing.status_code == 400 and "step" in missing.json()["detail"]
    bad_version = api.post(f"/api/v1/runs/{source['id']}/replay", key=key, json={"version": 9})
    assert bad_version.status_code == 400 and "version" in bad_version.text


def test_it_cannot_replay_or_fork_another_tenants_run(api, source, globex, make_key):
    stranger = make_key(globex, "read", "write")
    run_id = source["id"]
    assert api.post(f"/api/v1/runs/{run_id}/replay", key=stranger, json={}).status_code == 404
    fork = api.post(f"/api/v1/runs/{run_id}/fork", key=stranger, json={"step": 1, "result": 1})
    assert fork.status_code == 404
    assert api.get(f"/api/v1/runs/{run_id}/lineage", key=stranger).status_code == 404
