"""Every shape agents send today ends up in the same canonical span."""

import json

import orjson
import pytest

from controlplane.tenancy import tenant_scope
from tracing import selectors
from tracing.ingest.decode import decode_request
from tracing.ingest.pipeline import spans_ingest
from tracing.models import Span

TRACE = "5b8efff798038103d269b633813fc60c"


def value(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    return {"stringValue": v}


def ingest(tenant, attrs: dict, *, span_id="eee19b7ec3c1b174", events=(), name="span"):
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": value("svc")}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": span_id,
                                "name": name,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000200000000",
                                "attributes": [
                                    {"key": k, "value": value(v)} for k, v in attrs.items()
                                ],
                                "events": [
                                    {
                                        "name": n,
                                        "timeUnixNano": "1700000000100000000",
                                        "attributes": [
                                            {"key": k, "value": value(v)} for k, v in a.items()
                                        ],
                                    }
                                    for n, a in events
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    result = spans_ingest(
        tenant_id=tenant.id, request=decode_request(orjson.dumps(doc), "application/json")
    )
    assert result.accepted == 1, result.errors
    with tenant_scope(tenant):
        span = Span.objects.get(
            span_id=int(span_id, 16) - (1 << 64)
            if int(span_id, 16) >= 1 << 63
            else int(span_id, 16)
        )
        return span, selectors.span_detail(span=span)


@pytest.mark.django_db
def test_it_reads_the_current_genai_conventions(acme):
    messages = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    span, detail = ingest(
        acme,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1",
            "gen_ai.response.model": "gpt-4.1-2025",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.conversation.id": "c-9",
            "gen_ai.agent.name": "helper",
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "hello"}],
                        "finish_reason": "stop",
                    }
                ]
            ),
            "custom.flag": True,
            "custom.list": ["a", "b"],
        },
    )
    labels = selectors.span_labels(span=span)
    assert [labels[f] for f in ("operation", "provider", "request_model", "response_model")] == [
        "chat",
        "openai",
        "gpt-4.1",
        "gpt-4.1-2025",
    ]
    assert (span.input_tokens, span.output_tokens, span.session_id, labels["agent_name"]) == (
        12,
        3,
        "c-9",
        "helper",
    )
    assert labels["service_name"] == "svc"
    assert detail["input_messages"] == messages
    assert detail["output_messages"][0]["finish_reason"] == "stop"
    # Unknown attributes are kept as they came.
    assert detail["attributes"]["custom.flag"] is True
    assert detail["attributes"]["custom.list"] == ["a", "b"]


@pytest.mark.django_db
def test_it_reads_the_older_genai_attributes(acme):
    span, detail = ingest(
        acme,
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4",
            "gen_ai.usage.prompt_tokens": 40,
            "gen_ai.usage.completion_tokens": 7,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather in Paris?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_1",
            "gen_ai.completion.0.tool_calls.0.name": "weather",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
        },
    )
    labels = selectors.span_labels(span=span)
    assert (labels["operation"], labels["provider"], span.input_tokens, span.output_tokens) == (
        "chat",
        "openai",
        40,
        7,
    )
    assert detail["input_messages"] == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
    ]
    out = detail["output_messages"][0]
    assert out["finish_reason"] == "tool_calls"
    assert out["parts"] == [
        {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}
    ]
    assert not any(k.startswith("gen_ai.prompt.") for k in detail["attributes"])


@pytest.mark.django_db
def test_it_reads_messages_sent_as_span_events(acme):
    span, detail = ingest(
        acme,
        {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3"},
        events=[
            ("gen_ai.system.message", {"content": "You help."}),
            ("gen_ai.user.message", {"content": "Hi"}),
            (
                "gen_ai.choice",
                {
                    "message": json.dumps({"role": "assistant", "content": "Hello!"}),
                    "finish_reason": "stop",
                },
            ),
            ("exception", {"exception.message": "late"}),
        ],
    )
    assert selectors.span_labels(span=span)["operation"] == "chat"
    assert [m["role"] for m in detail["input_messages"]] == ["system", "user"]
    assert detail["output_messages"] == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hello!"}],
            "finish_reason": "stop",
        }
    ]
    assert [e["name"] for e in detail["events"]] == ["exception"]


@pytest.mark.django_db
def test_it_reads_openinference(acme):
    span, detail = ingest(
        acme,
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.provider": "openai",
            "llm.token_count.prompt": 10,
            "llm.token_count.completion": 5,
            "session.id": "s-1",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "2+2?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "t1",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "calc",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"expr": "2+2"}',
            "input.value": "2+2?",
        },
    )
    labels = selectors.span_labels(span=span)
    assert (labels["operation"], labels["request_model"], labels["provider"], span.session_id) == (
        "chat",
        "gpt-4o",
        "openai",
        "s-1",
    )
    assert (span.input_tokens, span.output_tokens) == (10, 5)
    assert detail["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "2+2?"}]}
    ]
    assert detail["output_messages"][0]["parts"] == [
        {"type": "tool_call", "id": "t1", "name": "calc", "arguments": {"expr": "2+2"}}
    ]
    assert detail["attributes"]["input.value"] == "2+2?"

    tool, tool_detail = ingest(
        acme,
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "calc",
            "input.value": '{"expr": "2+2"}',
            "output.value": "4",
        },
        span_id="aaa19b7ec3c1b174",
    )
    tool_labels = selectors.span_labels(span=tool)
    assert (tool_labels["operation"], tool_labels["tool_name"]) == ("execute_tool", "calc")
    assert tool_detail["tool_call_arguments"] == '{"expr": "2+2"}'
    assert tool_detail["tool_call_result"] == "4"


@pytest.mark.django_db
def test_it_keeps_long_event_attributes_redacted(acme):
    trace = (
        "Traceback (most recent call last):\n"
        + "  File 'agent.py', line 3\n" * 20
        + "mail ops@example.com"
    )
    span, detail = ingest(
        acme,
        {"gen_ai.operation.name": "chat"},
        events=[("exception", {"exception.stacktrace": trace})],
    )
    kept = detail["events"][0]["attributes"]["exception.stacktrace"]
    assert kept.startswith("Traceback") and "[EMAIL:" in kept and "ops@example.com" not in kept
    assert span.redactions == {"EMAIL": 1}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "attrs", "stored"),
    [
        ("chat claude-sonnet-4", {"gen_ai.request.model": "claude-sonnet-4"}, None),
        (
            "execute_tool lookup_order",
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order"},
            None,
        ),
        (
            "invoke_agent support",
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
            None,
        ),
        ("chat", {}, None),  # no model: the operation alone is the conventional name
        (
            "Summarise the ticket",
            {"gen_ai.request.model": "claude-sonnet-4"},
            "Summarise the ticket",
        ),
    ],
)
def test_it_stores_a_conventional_span_name_as_null_and_gives_it_back(acme, name, attrs, stored):
    from tracing.query import traces

    attrs = {"gen_ai.operation.name": "chat", **attrs}
    span, _ = ingest(acme, attrs, name=name)
    assert span.name == stored
    assert selectors.span_display_name(span=span) == name
    with tenant_scope(acme):
        assert [row["name"] for row in traces.trace_spans(trace_id=span.trace_id)] == [name]


def _turn(i: int, text: str) -> dict:
    return {"role": "user" if i % 2 else "assistant", "parts": [{"type": "text", "content": text}]}


@pytest.mark.parametrize(
    "sent",
    [
        # A conversation resent as it grows, as agents send it, and with other spacing.
        [json.dumps([_turn(i, f"step {i}") for i in range(n)]) for n in (1, 2, 4)],
        ["[" + ",\n ".join(json.dumps(_turn(i, "x")) for i in range(n)) + "]" for n in (1, 3)],
        # What only looks like a continuation is parsed as the whole is: not JSON, or a
        # different conversation, or the same one with a trailing comma.
        ['[{"role": "user"}]', '[{"role": "user"}, ]', '[{"role": "user"},,{"a": 1}]'],
        ['[{"role": "user"}]', '[{"role": "user"}] , {"a": 1}]', '[{"role": "user"}, []]'],
        ['[{"role": "user"}]', '[{"role": "userx"}, {"a": 1}]', "[]", "[", "not json ]"],
        ['{"role": "user"}', '[{"role": "user"}, {"a": 1}]', "[1] ]"],
    ],
)
def test_a_resent_conversation_parses_as_each_array_does_alone(sent):
    from tracing.ingest.normalise import ResentMessages, _messages_attr

    resent = ResentMessages()
    for value in sent:
        assert resent.parse(b"t" * 16, value) == _messages_attr(value), value


@pytest.mark.django_db
def test_a_secret_in_a_resent_conversations_new_message_is_redacted(acme):
    turns = [_turn(0, "hello there"), _turn(1, "my key is sk-ant-" + "a1" * 20)]
    spans = [
        {
            "traceId": TRACE,
            "spanId": f"{i + 1:016x}",
            "name": "chat",
            "startTimeUnixNano": str(1700000000000000000 + i),
            "endTimeUnixNano": str(1700000000000000100 + i),
            "attributes": [
                {"key": "gen_ai.operation.name", "value": value("chat")},
                {"key": "gen_ai.input.messages", "value": value(json.dumps(turns[: i + 1]))},
            ],
        }
        for i in range(2)
    ]
    doc = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}
    result = spans_ingest(
        tenant_id=acme.id, request=decode_request(orjson.dumps(doc), "application/json")
    )
    assert result.accepted == 2, result.errors
    with tenant_scope(acme):
        details = [selectors.span_detail(span=s) for s in Span.objects.order_by("span_id")]
    assert [len(d["input_messages"]) for d in details] == [1, 2]
    assert details[1]["input_messages"][0] == turns[0]
    text = details[1]["input_messages"][1]["parts"][0]["content"]
    assert "sk-ant-" not in text and "[API_KEY:" in text
