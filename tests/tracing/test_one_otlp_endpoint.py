"""One OTEL_EXPORTER_OTLP_ENDPOINT pointed at Flightdeck serves all three signals, over
HTTP and over gRPC, as an agent configured only with it (Claude Code's quick start)
sends them: the SDK's own exporters, built from the environment alone."""

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

from controlplane.tenancy import tenant_scope
from tests.tracing.codingagents import (
    CLAUDE_CODE,
    CLAUDE_CODE_METRICS,
    fixture,
    send,
    send_metrics,
)
from tests.tracing.otlp import agent_trace, provider_for
from tracing.models import MetricPoint, Trace

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_one_endpoint_takes_traces_logs_and_metrics(
    protocol, live_server, grpc_address, acme, make_key, monkeypatch
):
    endpoint = live_server.url if protocol != "grpc" else f"http://{grpc_address}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{make_key(acme, 'ingest')}"
    )
    spans, logs, metrics = (
        (GrpcSpans, GrpcLogs, GrpcMetrics)
        if protocol == "grpc"
        else (HttpSpans, HttpLogs, HttpMetrics)
    )
    provider = provider_for(spans(), service="claude-code")
    agent_trace(provider, steps=1, session="traced-session")
    provider.shutdown()
    send(logs(), fixture(CLAUDE_CODE))
    send_metrics(metrics(), fixture(CLAUDE_CODE_METRICS))
    with tenant_scope(acme):
        assert Trace.objects.filter(session_id="traced-session").count() == 1
        assert Trace.objects.filter(agent_name="claude-code").count() == 2
        assert MetricPoint.objects.filter(name="claude_code.token.usage").exists()
