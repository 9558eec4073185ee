"""A managed run's spans arrive through the one span path (the real tracing app):
normalised into span columns, redacted, payloads stored, tenant-scoped."""

import json
import uuid

import pytest

from controlplane.tenancy import tenant_scope
from tests.execution.bundles import agent_with_bundle, run_now
from tracing import selectors
from tracing.models import Span, Trace

AGENT = """
def main(ctx, input):
    reply = ctx.llm.messages(
        system="You answer briefly.",
        messages=[{"role": "user", "content": "Mail alice@example.com then use echo {\\"n\\": 1}"}],
        tools=[{"name": "echo", "description": "echo", "input_schema": {"type": "object"}}],
        max_tokens=100,
    )
    call = [b for b in reply.content if b.type == "tool_use"][0]
    result = ctx.tool(call.name, **call.input)
    try:
        ctx.tool("ghost")
    except Exception:
        pass
    return {"result": result}
"""


@pytest.mark.django_db(transaction=True)
def test_it_sends_run_spans_through_the_span_path(acme, globex):
    agent = agent_with_bundle(
        acme, name="traced", code=AGENT, manifest='entrypoint = "agent:main"\ntools = ["echo"]\n'
    )
    run = run_now(acme, agent)
    assert run.status == "succeeded", run.error
    with tenant_scope(acme):
        spans, labels = {}, {}
        for s in Span.objects.all():
            values = selectors.span_labels(span=s)
            key = values["operation"] + (":" + values["tool_name"] if values["tool_name"] else "")
            spans[key], labels[key] = s, values
        assert set(spans) == {"invoke_agent", "chat", "execute_tool:echo", "execute_tool:ghost"}
        assert {s.run_id for s in spans.values()} == {str(run.pk)}
        assert {s.trace_id for s in spans.values()} == {uuid.UUID(run.trace_id)}
        assert {values["service_name"] for values in labels.values()} == {"traced"}
        root, chat = spans["invoke_agent"], spans["chat"]
        assert chat.parent_span_id == root.span_id
        assert (labels["chat"]["provider"], labels["chat"]["request_model"]) == (
            "anthropic",
            "claude-sonnet-5",
        )
        assert chat.input_tokens == run.input_tokens and chat.output_tokens == run.output_tokens
        # Redacted exactly as for external agents.
        assert chat.redactions == {"EMAIL": 1}
        detail = selectors.span_detail(span=chat)
        assert "alice@example.com" not in str(detail) and "[EMAIL:" in str(detail["input_messages"])
        assert "tool_call" in str(detail["output_messages"])
        echo = selectors.span_detail(span=spans["execute_tool:echo"])
        assert json.loads(echo["tool_call_arguments"]) == {"n": 1}
        assert json.loads(echo["tool_call_result"]) == {"n": 1}
        assert spans["execute_tool:ghost"].status_code == 2  # the unknown tool is an error
        trace = Trace.objects.get()
        assert (trace.run_id, trace.agent_name) == (str(run.pk), "traced")
    with tenant_scope(globex):
        assert not Span.objects.exists()
