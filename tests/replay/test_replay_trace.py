"""A replay's chat spans name their source span's conversation instead of sending it
again; the trace reads back as if they had sent it: messages, attributes, tree."""

import pytest

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.testing import agent_with_bundle, run_now
from replay.services import run_replay_create
from tracing.models import Span
from tracing.selectors import span_stored_detail

EMAIL = "jane.doe@example.com"
CONVERSATION = f"""
def main(ctx, input):
    messages = []
    for n in range(input["steps"]):
        messages.append({{"role": "user", "content": f"step {{n}}: mail {EMAIL}"}})
        reply = ctx.llm.messages(messages=messages, max_tokens=40, system="Be brief.")
        messages.append({{"role": "assistant", "content": reply.content}})
        ctx.tool("echo", n=n)
    return len(messages)
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n'
# What differs between two runs of the same calls: ids, times, and the reference itself.
OWN = {
    "flightdeck.run.id",
    "gen_ai.conversation.id",
    "gen_ai.tool.call.id",
    "flightdeck.replay.source_span",
}


def replay_now(tenant, source):
    with tenant_scope(tenant):
        replay = run_replay_create(source=source, actor=Actor.system())
        services.run_execute(run_id=replay.pk, worker_id="test-worker")
        replay.refresh_from_db()
    assert replay.status == "succeeded", (replay.error, replay.logs)
    return replay


def tree(client, key, trace_id) -> list[dict]:
    """The trace's spans in tree order, each read whole through the API."""
    body = client.get(f"/api/v1/traces/{trace_id}", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    out = []

    def walk(nodes, depth):
        for node in nodes:
            span = client.get(
                f"/api/v1/spans/{node['span_id']}",
                {"trace_id": trace_id},
                HTTP_AUTHORIZATION=f"Bearer {key}",
            ).json()
            attributes = {k: v for k, v in span["attributes"].items() if k not in OWN}
            out.append(
                {
                    "depth": depth,
                    "name": node["name"],
                    "children": len(node["children"]),
                    "input": span["input_messages"],
                    "output": span["output_messages"],
                    "system": span["system_instructions"],
                    "tool": (span["tool_call_arguments"], span["tool_call_result"]),
                    "redactions": span["redactions"],
                    "attributes": attributes,
                }
            )
            walk(node["children"], depth + 1)

    walk(body["spans"], 0)
    return out


def source_spans(trace_id, tenant) -> list:
    with tenant_scope(tenant):
        spans = Span.objects.filter(trace_id=bytes.fromhex(trace_id))
        return [
            span_stored_detail(span=s)["attributes"].get("flightdeck.replay.source_span")
            for s in spans
            if span_stored_detail(span=s).get("refs", {}).get("in")
        ]


@pytest.fixture
def source(transactional_db, acme, messages_api):
    agent = agent_with_bundle(acme, name="conversation", code=CONVERSATION, manifest=MANIFEST)
    run = run_now(acme, agent, input={"steps": 6})
    assert run.status == "succeeded", (run.error, run.logs)
    return run


def test_it_reads_a_replays_trace_back_as_if_it_had_sent_its_conversations(
    client, acme, make_key, source, monkeypatch
):
    key = make_key(acme, "read")
    referred = replay_now(acme, source)
    names = source_spans(referred.trace_id, acme)
    assert len(names) == 6 and all(len(name) == 16 for name in names), names
    # The same replay with no source trace to refer to sends every conversation whole.
    monkeypatch.setattr("execution.spans.source_inputs", lambda tenant_id, trace_id: None)
    sent = replay_now(acme, source)
    assert source_spans(sent.trace_id, acme) == [None] * 6

    read = tree(client, key, referred.trace_id)
    assert read == tree(client, key, sent.trace_id)
    chats = [s for s in read if s["name"].startswith("chat ")]
    assert [len(s["input"]) for s in chats] == [1, 3, 5, 7, 9, 11]
    assert chats[-1]["input"][-1]["parts"][0]["content"].startswith("step 5: mail [EMAIL:")
    assert chats[-1]["redactions"]["EMAIL"] >= 6
    # The trace page's span fragment shows the conversation the span named.
    client.force_login(acme.owner)
    with tenant_scope(acme):
        last = max(
            Span.objects.filter(trace_id=bytes.fromhex(referred.trace_id)),
            key=lambda s: ("in" in span_stored_detail(span=s).get("refs", {}), s.start_ns),
        )
    page = client.get(
        f"/t/{acme.slug}/traces/{referred.trace_id}/spans/{last.span_id_hex}",
        HTTP_HX_REQUEST="true",
    )
    assert page.status_code == 200
    assert b"step 0: mail " in page.content and b"step 5: mail " in page.content
    # And as the source's, but for the attributes a replay adds.
    source_read = tree(client, key, source.trace_id)
    for side in (read, source_read):
        for span in side:
            del span["attributes"]
    assert read == source_read


def test_it_takes_no_conversation_from_a_span_outside_the_source_trace(
    transactional_db, acme, source
):
    from tracing.selectors import SourceInputs

    with tenant_scope(acme):
        # The first step's chat span, whose conversation is its one user message (rows
        # come back in another order on SQLite, where the key orders them).
        chat = next(
            s
            for s in Span.objects.filter(trace_id=bytes.fromhex(source.trace_id)).order_by(
                "start_ns"
            )
            if span_stored_detail(span=s).get("refs", {}).get("in")
        )
        of_source = SourceInputs(tenant_id=acme.id, trace_id=source.trace_id)
        assert of_source.of(chat.span_id_hex, count=1) is not None
        assert of_source.of(chat.span_id_hex, count=2) is None  # not the same conversation
        other = run_now(acme, source.agent, input={"steps": 1})
        elsewhere = SourceInputs(tenant_id=acme.id, trace_id=other.trace_id)
        assert elsewhere.of(chat.span_id_hex) is None


def test_it_takes_no_conversation_from_another_tenants_trace(
    transactional_db, acme, globex, source
):
    from tracing.selectors import SourceInputs

    with tenant_scope(acme):
        chat = next(
            s
            for s in Span.objects.filter(trace_id=bytes.fromhex(source.trace_id))
            if span_stored_detail(span=s).get("refs", {}).get("in")
        )
    with tenant_scope(globex):
        stranger = SourceInputs(tenant_id=globex.id, trace_id=source.trace_id)
        assert stranger.of(chat.span_id_hex) is None
