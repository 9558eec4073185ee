import uuid

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from controlplane.tenancy import tenant_scope
from tests.tracing.otlp import agent_trace, provider_for
from tracing.models import Span, Trace

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_stores_what_the_sdk_grpc_exporter_sends(grpc_address, acme, make_key):
    exporter = OTLPSpanExporter(
        endpoint=grpc_address,
        insecure=True,
        headers=(("authorization", f"Bearer {make_key(acme, 'ingest')}"),),
    )
    provider = provider_for(exporter, service="grpc-agent")
    trace_id, _ = agent_trace(provider, steps=2)
    provider.shutdown()
    with tenant_scope(acme):
        trace = Trace.objects.get(trace_id=uuid.UUID(int=trace_id))
        assert trace.span_count == 5 and trace.service_name == "grpc-agent"
        assert Span.objects.filter(labels__operation="chat").count() == 2


def test_it_refuses_a_missing_or_weak_key(grpc_address, acme, make_key):
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(grpc_address))
    request = trace_service_pb2.ExportTraceServiceRequest()
    with pytest.raises(grpc.RpcError) as missing:
        stub.Export(request)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as weak:
        stub.Export(request, metadata=(("authorization", f"Bearer {make_key(acme, 'read')}"),))
    assert weak.value.code() == grpc.StatusCode.PERMISSION_DENIED
    answer = stub.Export(
        request, metadata=(("authorization", f"Bearer {make_key(acme, 'ingest')}"),)
    )
    assert answer.partial_success.rejected_spans == 0


class _Watch:
    def __init__(self):
        self.calls = []

    def started(self):
        self.calls.append("started")

    def finished(self, large):
        self.calls.append(("finished", large))


def test_a_watched_server_tells_of_each_call_and_whether_its_request_was_large(acme, make_key):
    """The embedded web process gives its heap back once quiet after a large request,
    whether it came over HTTP or gRPC."""
    from tracing.grpc_server import make_server

    watch = _Watch()
    server, port = make_server("127.0.0.1:0", workers=2, watch=watch, large_bytes=10_000)
    server.start()
    try:
        stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        auth = (("authorization", f"Bearer {make_key(acme, 'ingest')}"),)
        stub.Export(trace_service_pb2.ExportTraceServiceRequest(), metadata=auth)
        large = trace_service_pb2.ExportTraceServiceRequest()
        large.resource_spans.add().resource.attributes.add(key="note").value.string_value = (
            "x" * 20_000
        )
        stub.Export(large, metadata=auth)
        with pytest.raises(grpc.RpcError):
            stub.Export(large)  # refused: no key; the call still ends
    finally:
        server.stop(grace=None)
    assert watch.calls == [
        "started",
        ("finished", False),
        "started",
        ("finished", True),
        "started",
        ("finished", True),
    ]
