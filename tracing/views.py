"""OTLP/HTTP trace ingest: POST /v1/traces."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

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
from tracing.ingest.receive import IngestRefused, ingest_key, receive

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


@csrf_exempt
@require_POST
def otlp_traces(request):
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
            export = decode_request(body, kind)
        except BodyTooLarge as exc:
            raise IngestRefused(413, "too_large", str(exc)) from None
        except DecodeError as exc:
            raise IngestRefused(400, "invalid", str(exc)) from None
        result = receive(key=key, request=export)
    except IngestRefused as refused:
        return _refusal(refused, as_protobuf)

    answer = ExportTraceServiceResponse()
    if result.rejected:
        answer.partial_success.rejected_spans = result.rejected
        answer.partial_success.error_message = result.error_message
    if as_protobuf:
        return HttpResponse(answer.SerializeToString(), content_type=PROTOBUF)
    return JsonResponse(json_format.MessageToDict(answer))
