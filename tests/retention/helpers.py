"""Traces sent through the OpenTelemetry SDK, aged by moving their start back, and
read back whole through the read API (real HTTP)."""

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from controlplane.tenancy import tenant_scope
from tests.tracing.otlp import agent_trace, provider_for
from tracing.exporter import InProcessSpanExporter
from tracing.models import Span, Trace
from tracing.search.index import search_index_spans

POLICY = {"hot_days": 1, "warm_days": 2, "cold_days": 3, "extended_days": 30, "agents": {}}


def send_trace(tenant, *, steps=2, session="conv-1") -> str:
    provider = provider_for(InProcessSpanExporter(tenant.id))
    trace_id, _ = agent_trace(provider, steps=steps, session=session)
    provider.shutdown()
    hex_id = f"{trace_id:032x}"
    with tenant_scope(tenant):
        spans = [
            (t.hex, (s & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex())
            for t, s in Span.objects.filter(trace_id=hex_id).values_list("trace_id", "span_id")
        ]
        search_index_spans(tenant_id=tenant.id, spans=spans)
    return hex_id


def age(tenant, hex_id: str, days: float) -> None:
    Trace.all_tenants.filter(tenant=tenant, trace_id=hex_id).update(
        start_time=F("start_time") - timedelta(days=days)
    )


def apply(tenant, days_ahead: float = 0) -> str:
    out = StringIO()
    when = (timezone.now() + timedelta(days=days_ahead)).isoformat()
    call_command("apply_retention", "--tenant", tenant.slug, "--as-of", when, stdout=out)
    return out.getvalue()


def tier_of(tenant, hex_id: str):
    row = Trace.all_tenants.filter(tenant=tenant, trace_id=hex_id).first()
    return None if row is None else row.tier


def read_whole(api, key, hex_id: str) -> dict:
    """The trace (its tier left out), every span with its payloads, and its session's
    conversation, as the API gives them."""
    trace = api.get(f"/api/v1/traces/{hex_id}", key=key)
    assert trace.status_code == 200, trace.text
    body = trace.json()
    # start_time is what age() moves; the tier is meant to change.
    summary = {
        k: v for k, v in body["trace"].items() if k not in ("tier", "text_archived", "start_time")
    }
    spans, stack = [], list(body["spans"])
    while stack:
        node = stack.pop()
        stack.extend(node["children"])
        detail = api.get(f"/api/v1/spans/{node['span_id']}?trace_id={hex_id}", key=key)
        assert detail.status_code == 200, detail.text
        spans.append(detail.json())
    spans.sort(key=lambda s: s["span_id"])
    session = summary["session_id"]
    messages = api.get(f"/api/v1/sessions/{session}/messages", key=key).json()
    return {"trace": summary, "tree": body["spans"], "spans": spans, "session": messages}
