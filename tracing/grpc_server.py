"""OTLP/gRPC: TraceService/Export, LogsService/Export and MetricsService/Export, on the
same paths as OTLP/HTTP."""

import logging
from concurrent import futures

import grpc
from django.db import close_old_connections
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tracing.ingest.receive import (
    IngestRefused,
    ingest_key,
    receive,
    receive_logs,
    receive_metrics,
)

logger = logging.getLogger(__name__)


def peer_address(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' or 'ipv6:[::1]:51234' -> the address alone."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].partition("]")[0]
    return rest.rpartition(":")[0] if kind == "ipv4" else peer


def _export(request, context, *, receive_fn, answer, rejected_field: str):
    close_old_connections()
    metadata = dict(context.invocation_metadata())
    try:
        key = ingest_key(metadata.get("authorization"), address=peer_address(context.peer()))
        result = receive_fn(key=key, request=request)
    except IngestRefused as refused:
        if refused.retry_after:
            # What OTLP exporters read to back off before they retry.
            context.set_trailing_metadata((("retry-after", str(refused.retry_after)),))
        context.abort(getattr(grpc.StatusCode, refused.grpc_code), refused.message)
    finally:
        close_old_connections()
    reply = answer()
    if result.rejected:
        setattr(reply.partial_success, rejected_field, result.rejected)
        reply.partial_success.error_message = result.error_message
    return reply


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        return _export(
            request,
            context,
            receive_fn=receive,
            answer=trace_service_pb2.ExportTraceServiceResponse,
            rejected_field="rejected_spans",
        )


class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        return _export(
            request,
            context,
            receive_fn=receive_logs,
            answer=logs_service_pb2.ExportLogsServiceResponse,
            rejected_field="rejected_log_records",
        )


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        return _export(
            request,
            context,
            receive_fn=receive_metrics,
            answer=metrics_service_pb2.ExportMetricsServiceResponse,
            rejected_field="rejected_data_points",
        )


class _Watched(grpc.ServerInterceptor):
    """Tells `watch` when each call starts, and when it ends whether its request was
    large (the embedded web process gives its heap back once quiet after one)."""

    def __init__(self, watch, large_bytes: int):
        self.watch = watch
        self.large_bytes = large_bytes

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, watch, large_bytes = handler.unary_unary, self.watch, self.large_bytes
        parse = handler.request_deserializer or (lambda raw: raw)

        def sized(raw: bytes):
            # The size as received: ByteSize() would encode the message again.
            return len(raw), parse(raw)

        def call(request, context):
            size, message = request
            watch.started()
            try:
                return inner(message, context)
            finally:
                watch.finished(size >= large_bytes)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=sized,
            response_serializer=handler.response_serializer,
        )


def make_server(
    address: str, *, workers: int = 8, watch=None, large_bytes: int = 1 << 20
) -> tuple[grpc.Server, int]:
    """A gRPC server bound to `address` (port 0 picks a free one), not yet started.
    `watch`: told of each call (started(), finished(large)), as gunicorn's hooks tell
    it of each HTTP request."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=[_Watched(watch, large_bytes)] if watch is not None else None,
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port
