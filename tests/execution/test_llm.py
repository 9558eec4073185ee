"""The LLM path: the real `anthropic` SDK against the local Messages API server, directly
and through the gateway (retries, errors the agent can handle, spans, context fitting)."""

import json
import time

import anthropic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from execution import contextfit
from execution.devllm.server import serve
from replay.models import JournalStep
from tests.execution.bundles import agent_with_bundle, run_now

TOOLS = [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}]


def test_it_speaks_the_messages_api_to_the_sdk(messages_api):
    client = anthropic.Anthropic(api_key="k", base_url=messages_api.url, max_retries=0)
    message = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=100,
        system="be brief",
        tools=TOOLS,
        messages=[{"role": "user", "content": 'Call weather {"city": "Oslo"}'}],
    )
    assert message.stop_reason == "tool_use"
    tool_use = message.content[1]
    assert (tool_use.type, tool_use.name, tool_use.input) == (
        "tool_use",
        "weather",
        {"city": "Oslo"},
    )
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    follow = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "Call weather"},
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}
                ],
            },
        ],
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].text == "The tool returned: sunny"


def test_it_checks_keys_either_way_and_answers_errors_in_the_apis_shape():
    server = serve(port=0, api_key="right-key")
    try:
        by_header = anthropic.Anthropic(api_key="right-key", base_url=server.url, max_retries=0)
        by_bearer = anthropic.Anthropic(auth_token="right-key", base_url=server.url, max_retries=0)
        for client in (by_header, by_bearer):
            reply = client.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.content[0].text == "You said: hi"
        wrong = anthropic.Anthropic(api_key="wrong", base_url=server.url, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            wrong.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(anthropic.BadRequestError, match="first message must use the user role"):
            by_header.messages.create(
                model="m", max_tokens=10, messages=[{"role": "assistant", "content": "x"}]
            )
        server.failures = [{"status": 529}]
        with pytest.raises(anthropic.APIStatusError) as failure:
            by_header.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert failure.value.status_code == 529
        server.latency_ms = 150
        started = time.monotonic()
        by_header.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert time.monotonic() - started >= 0.15
    finally:
        server.shutdown()


ASKER = """
def main(ctx, input):
    try:
        reply = ctx.llm.messages(
            system="be brief",
            messages=[{"role": "user", "content": input["say"]}],
            tools=input.get("tools") or [],
            max_tokens=64,
        )
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"content": reply.content, "usage": reply.usage, "stop": reply.stop_reason}
"""


@pytest.fixture
def spans(monkeypatch):
    """The run's spans, caught by the OpenTelemetry SDK's own in-memory exporter."""
    exporter = InMemorySpanExporter()
    monkeypatch.setattr("execution.spans.span_exporter", lambda tenant_id, sources=None: exporter)
    return exporter


def test_it_retries_overloaded_and_429_then_answers(acme, transactional_db, messages_api, spans):
    messages_api.failures = [{"status": 529, "count": 2}, {"status": 429, "retry_after": 0.3}]
    agent = agent_with_bundle(acme, name="asker", code=ASKER)
    started = time.monotonic()
    run = run_now(acme, agent, input={"say": "hello"})
    assert run.status == "succeeded", run.error
    assert run.output["content"][0]["text"] == "You said: hello"
    assert messages_api.requests == 4 and time.monotonic() - started >= 0.3
    chat = next(s for s in spans.get_finished_spans() if s.name.startswith("chat"))
    assert chat.attributes["flightdeck.attempts"] == 4


def test_it_hands_the_agent_an_error_once_retries_are_spent(
    acme, transactional_db, messages_api, settings
):
    settings.EXECUTION_RETRY_ATTEMPTS = 2
    messages_api.failures = [{"status": 500, "count": 5}]
    agent = agent_with_bundle(acme, name="asker", code=ASKER)
    run = run_now(acme, agent, input={"say": "hello"})
    assert run.status == "succeeded", run.error
    assert run.output["error"] == "LLMError" and "answered 500" in run.output["message"]
    assert messages_api.requests == 2
    step = JournalStep.all_tenants.get(run_id=run.pk)
    assert step.is_error and step.kind == "llm.messages"


def test_it_records_genai_spans_for_llm_and_tool_calls(acme, transactional_db, spans):
    code = ASKER.replace(
        '    return {"content"',
        "    try:\n        ctx.tool('ghost')\n    except Exception:\n        pass\n    return {\"content\"",
    )
    agent = agent_with_bundle(acme, name="asker", code=code)
    run = run_now(acme, agent, input={"say": 'use weather {"city": "Rome"}', "tools": TOOLS})
    assert run.status == "succeeded", run.error
    by_op = {s.attributes["gen_ai.operation.name"]: s for s in spans.get_finished_spans()}
    root, chat, tool = by_op["invoke_agent"], by_op["chat"], by_op["execute_tool"]
    assert format(root.context.trace_id, "032x") == run.trace_id
    assert (
        chat.parent.span_id == root.context.span_id and tool.parent.span_id == root.context.span_id
    )
    assert root.resource.attributes["service.name"] == "asker"
    for span in (root, chat, tool):
        assert span.attributes["flightdeck.run.id"] == str(run.pk)
        assert span.attributes["gen_ai.agent.name"] == "asker"
    assert chat.attributes["gen_ai.provider.name"] == "anthropic"
    assert chat.attributes["gen_ai.request.model"] == "claude-sonnet-5"
    assert chat.attributes["gen_ai.usage.input_tokens"] == run.input_tokens
    assert json.loads(chat.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": 'use weather {"city": "Rome"}'}]}
    ]
    assert json.loads(chat.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "be brief"}
    ]
    output = json.loads(chat.attributes["gen_ai.output.messages"])
    assert output[0]["finish_reason"] == "tool_use"
    assert output[0]["parts"][1]["type"] == "tool_call" and output[0]["parts"][1]["arguments"] == {
        "city": "Rome"
    }
    # The unknown tool is an error on its span.
    assert tool.attributes["gen_ai.tool.name"] == "ghost"
    assert tool.attributes["flightdeck.tool.error"] == "unknown_tool"
    assert tool.status.status_code.name == "ERROR"


def test_it_fits_a_long_history_into_the_budget_with_a_summary(
    acme, transactional_db, messages_api
):
    code = """
def main(ctx, input):
    history = []
    for i in range(30):
        history.append({"role": "user", "content": "question %d %s" % (i, "x" * 200)})
        history.append({"role": "assistant", "content": [{"type": "tool_use", "id": "t%d" % i, "name": "f", "input": {}}]})
        history.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t%d" % i, "content": "r"}]})
        history.append({"role": "assistant", "content": "answer %d" % i})
    fitted = ctx.context.fit(history, budget_tokens=1000)
    plain = ctx.context.fit(history, budget_tokens=1000, summarise=False)
    small = ctx.context.fit(history[:4], budget_tokens=100000)
    return {"fitted": fitted, "plain": plain, "small": len(small), "n": len(history)}
"""
    agent = agent_with_bundle(acme, name="fitter", code=code)
    run = run_now(acme, agent)
    assert run.status == "succeeded", run.error
    fitted, plain = run.output["fitted"], run.output["plain"]
    assert run.output["small"] == 4
    assert 4 <= len(fitted) < run.output["n"]
    assert sum(len(json.dumps(m)) // 4 + 4 for m in fitted) <= 1000
    first = fitted[0]
    assert first["role"] == "user"
    assert first["content"][0]["text"].startswith("Summary of the earlier conversation: You said:")
    # Never starts on a tool_result whose tool_use was dropped.
    assert all(b.get("type") != "tool_result" for b in first["content"] if isinstance(b, dict))
    assert "earlier messages were left out" in plain[0]["content"][0]["text"]
    assert messages_api.requests == 1  # one summary; the plain fit and the small one call nothing


def test_it_journals_a_fit_as_what_it_dropped_and_rebuilds_it_exactly():
    turns = [{"role": "user", "content": "q " * 300}, {"role": "assistant", "content": "a " * 300}]
    history = turns * 6 + [{"role": "assistant", "content": "last " * 300}]
    for messages, summarise in ((history, False), (history, True), (history[-1:], False)):
        result = contextfit.fit(
            messages, 400, summarise=summarise, summarise_call=lambda dropped: "short"
        )
        journaled = contextfit.journal_form(result, messages)
        assert (
            "messages" not in journaled and contextfit.from_journal(journaled, messages) == result
        )
    # A result that is not what a fit of these messages answers (a fork's) stays whole.
    written = {"messages": [{"role": "user", "content": "mine"}], "dropped": 2}
    assert contextfit.journal_form(written, history) == written
    assert contextfit.from_journal(written, history) == written


def test_it_keeps_state_per_run_and_memory_per_agent(acme, transactional_db):
    code = """
def main(ctx, input):
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    ctx.memory.put("fact-" + input["id"], {"text": input["fact"]}, text=input["fact"])
    return {"state": ctx.state["n"], "found": ctx.memory.search(input["query"]), "missing": ctx.memory.get("nope", "default")}
"""
    agent = agent_with_bundle(acme, name="memo", code=code)
    run_now(acme, agent, input={"id": "1", "fact": "the launch is on friday", "query": "launch"})
    run = run_now(
        acme,
        agent,
        input={"id": "2", "fact": "coffee is in the kitchen", "query": "when is the launch"},
    )
    assert run.status == "succeeded", run.error
    assert run.output["state"] == 1  # state is per run
    assert run.output["missing"] == "default"
    assert [f["key"] for f in run.output["found"]] == ["fact-1"]
    assert run.output["found"][0]["value"] == {"text": "the launch is on friday"}


class RecordingBudget:
    """A budget hook (execution/budget.py): admit the run, reserve before each LLM call
    (and the sandbox's CPU time), settle after. Records the LLM calls."""

    calls: list = []

    def admit(self, *, run):
        pass

    def reserve(self, *, run_id, request, kind="llm"):
        if kind == "llm":
            RecordingBudget.calls.append(("reserve", run_id, request["model"]))
        return {"run_id": run_id, "kind": kind}

    def settle(self, *, reservation, usage):
        if reservation["kind"] == "llm":
            RecordingBudget.calls.append(("settle", reservation["run_id"], usage))

    def flush(self):
        pass


def test_it_calls_the_budget_hook_around_each_llm_call(
    acme, transactional_db, settings, messages_api
):
    settings.EXECUTION_BUDGET_HOOK = "tests.execution.test_llm.RecordingBudget"
    RecordingBudget.calls = []
    agent = agent_with_bundle(acme, name="asker", code=ASKER)
    run = run_now(acme, agent, input={"say": "hello"})
    assert run.status == "succeeded", run.error
    (kind1, run1, model), (kind2, run2, usage) = RecordingBudget.calls
    assert (kind1, kind2, run1, run2, model) == (
        "reserve",
        "settle",
        run.pk,
        run.pk,
        "claude-sonnet-5",
    )
    assert usage == {"input_tokens": run.input_tokens, "output_tokens": run.output_tokens}
