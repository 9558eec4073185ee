"""The trace page's header, timeline axis, root Input / Output panel and downloads."""

import json
import uuid

import orjson
import pytest

from controlplane.tenancy import tenant_scope
from frontend.present import axis_ticks, duration
from tests.tracing.searchdata import conversation_trace, in_process_provider
from tracing.ingest.decode import decode_request
from tracing.ingest.pipeline import spans_ingest
from tracing.models import Span, Trace

pytestmark = pytest.mark.django_db


def test_it_puts_each_tick_at_the_time_its_label_says():
    for total in (0.4, 7, 999, 1500, 4321, 61_000, 3_600_000):
        ticks = axis_ticks(total)
        assert ticks[0] == {"left": 0, "label": "0"}
        assert 4 <= len(ticks) <= 11
        # A round step: 1, 2 or 5 times a power of ten, the first at least a fifth.
        step = min(m * 10.0**e for m in (1, 2, 5) for e in range(-3, 8) if m * 10.0**e >= total / 5)
        for k, tick in enumerate(ticks):
            assert tick["left"] <= 100
            assert tick["label"] == (duration(k * step) if k else "0")
            assert abs(tick["left"] - k * step * 100 / total) < 0.001


def test_it_lists_every_model_and_the_root_input_and_output(client, acme):
    provider = in_process_provider(acme)
    trace_id = conversation_trace(
        provider,
        model="claude-haiku-4",
        attrs={
            "input.value": json.dumps([{"role": "user", "content": "Where is order 1000?"}]),
            "output.value": json.dumps({"status": "shipped", "order": 1000}),
            "enduser.id": "customer-9",
        },
    )
    provider.shutdown()
    client.force_login(acme.owner)
    page = client.get(f"/t/acme/traces/{trace_id}/").content.decode()
    assert "claude-haiku-4, claude-haiku-4-20250514" in page
    assert 'id="root-io"' in page
    assert "Where is order 1000?" in page and "msg role-user" in page
    assert "&quot;status&quot;: &quot;shipped&quot;" in page
    assert "customer-9" in page


def test_it_downloads_a_trace_as_json_and_as_otlp_that_re_imports(client, acme, globex):
    provider = in_process_provider(acme)
    trace_id = conversation_trace(provider, session="conv-export")
    provider.shutdown()
    client.force_login(acme.owner)

    whole = client.get(f"/t/acme/traces/{trace_id}/download")
    assert whole["Content-Disposition"] == f'attachment; filename="trace-{trace_id}.json"'
    spans = whole.json()["spans"]
    assert len(spans) == 4
    chats = [s for s in spans if s["operation"] == "chat"]
    assert chats[1]["output_messages"][0]["parts"][0]["content"] == "It has shipped."

    otlp = client.get(f"/t/acme/traces/{trace_id}/download?format=otlp")
    assert otlp["Content-Disposition"].endswith(f'trace-{trace_id}.otlp.json"')
    result = spans_ingest(
        tenant_id=globex.id, request=decode_request(otlp.content, "application/json")
    )
    assert result.accepted == 4
    with tenant_scope(acme):
        ours = Trace.objects.get(trace_id=uuid.UUID(trace_id))
        our_spans = {s.span_id: s for s in Span.objects.filter(trace_id=ours.trace_id)}
    with tenant_scope(globex):
        theirs = Trace.objects.get(trace_id=uuid.UUID(trace_id))
        copied = client_json(client, globex, trace_id)
    fields = ("name", "session_id", "span_count", "input_tokens", "output_tokens", "model")
    assert [getattr(theirs, f) for f in fields] == [getattr(ours, f) for f in fields]
    assert len(copied) == len(our_spans)
    # The same spans, but for the counts of what ingest redacted: the copy holds
    # placeholders where the original held an e-mail address, and nothing to redact.
    assert spans[1]["redactions"] == {"EMAIL": 1} and copied[1]["redactions"] == {}
    assert same(copied) == same(spans)


def same(spans: list[dict]) -> bytes:
    kept = [{k: v for k, v in s.items() if k != "redactions"} for s in spans]
    return orjson.dumps(sorted(kept, key=lambda s: s["span_id"]), option=orjson.OPT_SORT_KEYS)


def client_json(client, tenant, trace_id):
    client.force_login(tenant.owner)
    return client.get(f"/t/{tenant.slug}/traces/{trace_id}/download").json()["spans"]


def test_it_hides_another_tenants_trace_download(client, acme, globex):
    provider = in_process_provider(globex)
    trace_id = conversation_trace(provider)
    provider.shutdown()
    client.force_login(acme.owner)
    assert client.get(f"/t/acme/traces/{trace_id}/download").status_code == 404
