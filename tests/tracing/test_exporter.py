import uuid

import pytest

from controlplane.tenancy import tenant_scope
from tests.tracing.otlp import agent_trace, provider_for
from tracing import selectors
from tracing.exporter import InProcessSpanExporter
from tracing.models import Span, Trace
from tracing.signals import spans_ingested


@pytest.mark.django_db(transaction=True)
def test_it_sends_in_process_spans_down_the_same_path_and_publishes_them(acme, globex):
    heard = []

    def listener(sender, **kwargs):
        heard.append(kwargs)

    spans_ingested.connect(listener)
    try:
        provider = provider_for(InProcessSpanExporter(acme.id), service="managed")
        trace_id, _ = agent_trace(provider, steps=1)
        provider.shutdown()
    finally:
        spans_ingested.disconnect(listener)
    with tenant_scope(acme):
        chat = Span.objects.get(labels__operation="chat")
        assert chat.redactions == {"EMAIL": 1}
        assert "[EMAIL:" in str(selectors.span_detail(span=chat)["input_messages"])
        assert Trace.objects.get().trace_id == uuid.UUID(int=trace_id)
    with tenant_scope(globex):
        assert not Span.objects.exists()
    assert sum(len(h["spans"]) for h in heard) == 3
    assert {h["tenant_id"] for h in heard} == {acme.id}
    assert heard[0]["trace_ids"] == [f"{trace_id:032x}"]
