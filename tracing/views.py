"""OTLP/HTTP ingest: POST /v1/traces, /v1/logs and /v1/metrics."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from controlplane.throttle import client_address
from tracing.ingest.decode import (
    JSON,
    PROTOBUF,
    BodyTooLarge,
    DecodeError,
    decode_request,
    inflate,
    media_type,
)
from tracing.ingest.receive import (
    IngestRefused,
    ingest_key,
    receive,
    receive_logs,
    receive_metrics,
)

GRPC_STATUS_NUMBERS = {
    "INVALID_ARGUMENT": 3,
    "UNAUTHENTICATED": 16,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "UNAVAILABLE": 14,
}


def _refusal(refused: IngestRefused, as_protobuf: bool) -> HttpResponse:
    # OTLP/HTTP answers errors with a google.rpc.Status in the request's encoding.
    if as_protobuf:
        status = status_pb2.Status(
            code=GRPC_STATUS_NUMBERS[refused.grpc_code], message=refused.message
        )
        response = HttpResponse(
            status.SerializeToString(), status=refused.status, content_type=PROTOBUF
        )
    else:
        response = JsonResponse(
            {
                "error": refused.error,
                "detail": refused.message,
                "code": GRPC_STATUS_NUMBERS[refused.grpc_code],
                "message": refused.message,
            },
            status=refused.status,
        )
    if refused.retry_after:
        response["Retry-After"] = str(refused.retry_after)
    return response


def _export(request, *, message, answer, rejected_field: str, receive_fn) -> HttpResponse:
    """One OTLP/HTTP export, whichever the signal: the same key check, limits, decoding,
    partial success and 503/Retry-After for all three."""
    kind = media_type(request.content_type)
    as_protobuf = kind != JSON
    try:
        key = ingest_key(request.headers.get("Authorization"), address=client_address(request.META))
        if kind not in (PROTOBUF, JSON):
            raise IngestRefused(
                415,
                "unsupported_media_type",
                f"Content-Type {request.content_type!r} is not supported (use {PROTOBUF} or {JSON})",
            )
        limit = settings.INGEST_MAX_BODY_BYTES
        declared = request.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise IngestRefused(413, "too_large", f"body is over the {limit}-byte limit")
        try:
            # Read the stream ourselves: the OTLP limit, not Django's form-upload limit.
            raw = request.read(limit + 1)
            if len(raw) > limit:
                raise BodyTooLarge(f"body is over the {limit}-byte limit")
            body = inflate(raw, request.headers.get("Content-Encoding"), limit)
            export = decode_request(body, kind, message)
        except BodyTooLarge as exc:
            raise IngestRefused(413, "too_large", str(exc)) from None
        except DecodeError as exc:
            raise IngestRefused(400, "invalid", str(exc)) from None
        result = receive_fn(key=key, request=export)
    except IngestRefused as refused:
        return _refusal(refused, as_protobuf)

    reply = answer()
    if result.rejected:
        setattr(reply.partial_success, rejected_field, result.rejected)
        reply.partial_success.error_message = result.error_message
    if as_protobuf:
        return HttpResponse(reply.SerializeToString(), content_type=PROTOBUF)
    return JsonResponse(json_format.MessageToDict(reply))


@csrf_exempt
@require_POST
def otlp_traces(request):
    return _export(
        request,
        message=ExportTraceServiceRequest,
        answer=ExportTraceServiceResponse,
        rejected_field="rejected_spans",
        receive_fn=receive,
    )


@csrf_exempt
@require_POST
def otlp_logs(request):
    return _export(
        request,
        message=ExportLogsServiceRequest,
        answer=ExportLogsServiceResponse,
        rejected_field="rejected_log_records",
        receive_fn=receive_logs,
    )


@csrf_exempt
@require_POST
def otlp_metrics(request):
    return _export(
        request,
        message=ExportMetricsServiceRequest,
        answer=ExportMetricsServiceResponse,
        rejected_field="rejected_data_points",
        receive_fn=receive_metrics,
    )
