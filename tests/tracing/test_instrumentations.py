"""Spans as the real instrumentations send them: the `anthropic` SDK against the local
Messages API server, traced by OpenInference and by OpenLLMetry, exported over OTLP
HTTP and gRPC to a real server, read back through the REST API."""

import json
import uuid

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)

from controlplane.tenancy import tenant_scope
from tests.tracing.instrumented import conversation, http_exporter
from tracing import selectors
from tracing.models import Span, Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def texts(message: dict) -> list[str]:
    return [p.get("content") for p in message["parts"] if p["type"] == "text"]


def tool_calls(message: dict) -> list[str]:
    return [p["name"] for p in message["parts"] if p["type"] == "tool_call"]


def grpc_exporter(address, key):
    return GrpcExporter(
        endpoint=address, insecure=True, headers=(("authorization", f"Bearer {key}"),)
    )


@pytest.mark.parametrize("name", ["openinference", "openllmetry"])
def test_it_keeps_the_assistants_text_and_tool_call(name, traced, api, acme, make_key):
    provider, client = traced(name, http_exporter(api, make_key(acme, "ingest")))
    trace_id = conversation(provider, client, session=f"s-{name}", user="user-42")
    with tenant_scope(acme):
        chats = list(
            Span.objects.filter(
                trace_id=uuid.UUID(int=trace_id), labels__operation="chat"
            ).order_by("start_ns")
        )
        details = [selectors.span_detail(span=c) for c in chats]
        models = {selectors.span_labels(span=c)["request_model"] for c in chats}
    assert len(details) == 2 and models == {"claude-test"}
    answer = details[0]["output_messages"][0]
    assert texts(answer) == ["I will use lookup_order."]
    assert tool_calls(answer) == ["lookup_order"]  # once, though OpenInference sends it twice
    assert texts(details[1]["output_messages"][0]) == ["The tool returned: shipped"]
    leftovers = [k for d in details for k in d["attributes"] if "messages." in k]
    assert leftovers == []


@pytest.mark.parametrize("name", ["openinference", "openllmetry"])
def test_it_shows_each_message_of_a_session_once(name, traced, api, acme, make_key):
    key = make_key(acme, "ingest", "read")
    provider, client = traced(name, http_exporter(api, key))
    session = f"session-{name}"
    conversation(provider, client, session=session, user="user-42")

    answer = api.get(f"/api/v1/sessions/{session}/messages", key=key)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    roles = [item["message"]["role"] for item in items]
    assert roles.count("system") <= 1
    turns = [item["message"] for item in items if item["message"]["role"] != "system"]
    assert [m["role"] for m in turns] == ["user", "assistant", turns[2]["role"], "assistant"]
    assert tool_calls(turns[1]) == ["lookup_order"]
    assert texts(turns[3]) == ["The tool returned: shipped"]
    with tenant_scope(acme):
        chats = list(Span.objects.filter(labels__operation="chat").order_by("start_ns"))
    first, second = (f"{c.span_id & (2**64 - 1):016x}" for c in chats)
    assert [item["span_id"] for item in items if item["message"]["role"] != "system"] == [
        first,
        first,
        second,
        second,
    ]


def test_it_shows_a_message_once_when_a_span_nests_under_the_instrumentations(
    traced, api, acme, make_key
):
    """Flightdeck's own chat span (current GenAI attributes) around the call that
    OpenInference traces: both hold the same conversation."""
    key = make_key(acme, "ingest", "read")
    provider, client = traced("openinference", http_exporter(api, key))
    tracer = provider.get_tracer("tests.sdk")
    question = "Where is my parcel?"
    user = {"role": "user", "parts": [{"type": "text", "content": question}]}
    with tracer.start_as_current_span("chat claude-test") as outer:
        outer.set_attribute("gen_ai.operation.name", "chat")
        outer.set_attribute("gen_ai.conversation.id", "nested")
        outer.set_attribute("gen_ai.input.messages", json.dumps([user]))
        reply = client.messages.create(
            model="claude-test", max_tokens=100, messages=[{"role": "user", "content": question}]
        )
        said = {"role": "assistant", "parts": [{"type": "text", "content": reply.content[0].text}]}
        outer.set_attribute("gen_ai.output.messages", json.dumps([said]))
    provider.force_flush()
    items = api.get("/api/v1/sessions/nested/messages", key=key).json()["items"]
    assert [item["message"] for item in items] == [user, said]


@pytest.mark.parametrize("name", ["openinference", "openllmetry"])
def test_it_takes_the_user_from_the_trace_over_grpc(
    name, traced, grpc_address, api, acme, make_key
):
    key = make_key(acme, "ingest", "read")
    provider, client = traced(name, grpc_exporter(grpc_address, key))
    trace_id = conversation(provider, client, session=f"g-{name}", user="enduser-7")
    with tenant_scope(acme):
        assert Trace.objects.get(trace_id=uuid.UUID(int=trace_id)).user_id == "enduser-7"
    found = api.get("/api/v1/traces?user=enduser-7", key=key).json()["items"]
    assert [t["trace_id"] for t in found] == [f"{trace_id:032x}"]
    assert found[0]["user_id"] == "enduser-7"
    assert api.get("/api/v1/traces?user=someone-else", key=key).json()["items"] == []
