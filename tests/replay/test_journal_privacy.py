"""The journal at rest and in its readable form: sealed with the tenant's key, shown
redacted unless an admin asks, deleted with the run; and a conversation referred to,
not copied, so the journal grows with the steps, not with the conversation's square."""

import re

import pytest
from django.db import connection

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.gateway import journal_request
from execution.testing import agent_with_bundle, run_now
from replay import sealing
from replay.models import JournalStep
from replay.services import journal_delete, run_replay_create

EMAIL = "jane.doe@example.com"
PRIVATE = f"""
def main(ctx, input):
    echoed = ctx.tool("echo", text="write to {EMAIL}")
    reply = ctx.llm.messages(
        messages=[{{"role": "user", "content": "hello {EMAIL}"}}], max_tokens=20
    )
    return {{"echoed": echoed["text"], "reply": reply.content[0].text}}
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n'
CONVERSATION = """
def main(ctx, input):
    messages = []
    for n in range(input["steps"]):
        messages.append({"role": "user", "content": f"step {n}: go on"})
        reply = ctx.llm.messages(messages=messages, max_tokens=40)
        messages.append({"role": "assistant", "content": reply.content})
    return len(messages)
"""
# A conversation that outgrows its budget, fitted before every LLM call (summarised on
# every other step). Its messages are hex, so zstd cannot hide a copied conversation.
FITTING = """
import hashlib


def main(ctx, input):
    messages, fitted = [], []
    for n in range(input["steps"]):
        words = " ".join(hashlib.sha256(f"{n}-{i}".encode()).hexdigest() for i in range(4))
        messages.append({"role": "user", "content": f"step {n}: {words}"})
        fitted = ctx.context.fit(messages, budget_tokens=600, summarise=n % 2 == 0)
        reply = ctx.llm.messages(messages=fitted, max_tokens=40)
        messages.append({"role": "assistant", "content": reply.content})
    return {"fitted": fitted, "count": len(messages)}
"""


def stored(run_id: int) -> list[tuple[int, bytes, bytes]]:
    """The journal's rows as the database holds them: (step, request, result) bytes."""
    table = JournalStep._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT step, request, result FROM {table} WHERE run_id = %s ORDER BY step",  # noqa: S608
            [run_id],
        )
        return [(s, bytes(q or b""), bytes(r or b"")) for s, q, r in cursor.fetchall()]


@pytest.fixture
def private_run(transactional_db, acme, messages_api):
    agent = agent_with_bundle(acme, name="private", code=PRIVATE, manifest=MANIFEST)
    run = run_now(acme, agent)
    assert run.status == "succeeded", (run.error, run.logs)
    return run


def test_it_seals_requests_and_results_with_the_tenants_own_key(private_run, acme, globex):
    rows = stored(private_run.pk)
    assert len(rows) == 2
    for _, request, result in rows:
        for raw in (request, result):
            assert EMAIL.encode() not in raw and b"write to" not in raw and b"hello" not in raw
            assert raw[:1] == sealing.VERSION and int.from_bytes(raw[1:9], "big") == acme.id
    tool_request = rows[0][1]
    assert sealing.unseal(tool_request) == {
        "name": "echo",
        "arguments": {"text": f"write to {EMAIL}"},
    }
    # The same bytes claimed for another tenant open with that tenant's key: they don't.
    as_globex = sealing.VERSION + globex.id.to_bytes(8, "big") + tool_request[9:]
    with pytest.raises(sealing.JournalKeyError):
        sealing.unseal(as_globex)
    with tenant_scope(acme):
        step = JournalStep.objects.get(run=private_run, kind="tool")
    assert step.result == {"text": f"write to {EMAIL}"}  # replay reads it whole


@pytest.mark.postgres
def test_it_shows_the_journal_redacted_unless_an_admin_asks(api, private_run, acme, make_key):
    url = f"/api/v1/runs/{private_run.pk}/steps"
    reader, admin = make_key(acme, "read"), make_key(acme, "read", "admin")
    for key in (reader, admin):
        steps = api.get(url, key=key).json()
        text = str(steps)
        assert EMAIL not in text and "[EMAIL:" in text, steps
        assert steps[0]["request"]["arguments"]["text"].startswith("write to [EMAIL:")
    refused = api.get(url + "?unredacted=1", key=reader)
    assert refused.status_code == 403 and "admin scope" in refused.text
    bad = api.get(url + "?unredacted=please", key=admin)
    assert bad.status_code == 400 and "unredacted" in bad.text
    whole = api.get(url + "?unredacted=1", key=admin).json()
    assert whole[0]["result"] == {"text": f"write to {EMAIL}"}


def test_it_shows_the_run_page_journal_redacted_and_whole_to_admins_who_ask(
    client, private_run, acme, acme_viewer
):
    url = f"/t/acme/runs/{private_run.pk}/"
    hx = {"HTTP_HX_REQUEST": "true"}
    client.force_login(acme_viewer)
    page = client.get(url).content.decode()
    rows = re.findall(r'<details class="step.*?</details>', page, re.S)  # the journal's rows
    opened = client.get(url, {"step": 1}, **hx).content.decode()
    assert len(rows) == 2 and "[EMAIL:" in rows[0] and EMAIL not in "".join(rows)
    assert EMAIL not in opened and "[EMAIL:" in opened
    assert "Show unredacted" not in opened
    assert client.get(url, {"step": 1, "unredacted": "1"}, **hx).status_code == 403
    client.force_login(acme.owner)
    assert "Show unredacted" in client.get(url, {"step": 1}, **hx).content.decode()
    whole = client.get(url, {"step": 1, "unredacted": "1"}, **hx).content.decode()
    assert EMAIL in whole and "unredacted" in whole


def test_it_deletes_a_runs_journal_and_only_that_runs(private_run, acme):
    other = run_now(acme, private_run.agent)
    with tenant_scope(acme):
        assert journal_delete(run=private_run) == 2
    assert stored(private_run.pk) == [] and len(stored(other.pk)) == 2


def test_it_keeps_an_llm_steps_request_the_same_size_whatever_the_conversation():
    def conversation(n):
        return [{"role": "user", "content": f"message {i} " * 20} for i in range(n)]

    sizes = [
        len(sealing.seal(tenant_id=1, value=journal_request(
            "llm.messages", {"messages": conversation(n), "max_tokens": 40}, span_id="ab" * 8
        )))
        for n in (1, 10, 1000)
    ]  # fmt: skip
    assert max(sizes) - min(sizes) <= 16, sizes  # the count's digits, a block of padding


def test_it_grows_a_conversations_journal_with_its_steps(transactional_db, acme, messages_api):
    agent = agent_with_bundle(acme, name="conversation", code=CONVERSATION, manifest=MANIFEST)
    per_step = {}
    for steps in (5, 40):
        run = run_now(acme, agent, input={"steps": steps})
        assert run.status == "succeeded", (run.error, run.logs)
        rows = stored(run.pk)
        per_step[steps] = sum(len(q) + len(r) for _, q, r in rows) / len(rows)
        with tenant_scope(acme):
            last = JournalStep.objects.get(run=run, step=len(rows))
        assert last.request["messages"]["count"] == 2 * steps - 1
        assert len(last.request["messages"]["span"]) == 16  # its chat span holds them
    assert per_step[40] < per_step[5] * 1.15, per_step


def test_it_journals_a_context_fit_by_what_it_kept_and_replays_it_exactly(
    transactional_db, acme, messages_api
):
    agent = agent_with_bundle(acme, name="fitting", code=FITTING, manifest=MANIFEST)
    per_step, runs = {}, {}
    for steps in (10, 40):
        run = run_now(acme, agent, input={"steps": steps})
        assert run.status == "succeeded", (run.error, run.logs)
        rows = stored(run.pk)
        per_step[steps] = sum(len(q) + len(r) for _, q, r in rows) / len(rows)
        runs[steps] = run
    # Copied whole, the 40-step run's fits would cost about five times the 10-step's.
    assert per_step[40] < per_step[10] * 1.15, per_step
    run = runs[40]
    assert len(run.output["fitted"]) < run.output["count"] - 1  # the late fits dropped some
    with tenant_scope(acme):
        fits = list(JournalStep.objects.filter(run=run, kind="context.fit").order_by("step"))
        last = fits[-1]
        assert last.request["messages"]["count"] == 2 * 40 - 1
        assert "messages" not in last.result and last.result["dropped"] > 0
        assert last.result["note"].startswith("[")  # step 39: left out, not summarised
        replay = run_replay_create(source=run, actor=Actor.system())
        services.run_execute(run_id=replay.pk, worker_id="test-worker")
        replay.refresh_from_db()
        replayed = list(JournalStep.objects.filter(run=replay, kind="context.fit"))
    assert replay.status == "succeeded", (replay.error, replay.logs)
    assert replay.output == run.output  # every fit answered as the source's was
    assert {(s.request_hash, s.occurrence): s.result for s in replayed} == {
        (s.request_hash, s.occurrence): s.result for s in fits
    }
