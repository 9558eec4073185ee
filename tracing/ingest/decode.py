"""OTLP/HTTP request bodies to export requests (traces, logs, metrics): protobuf or JSON,
maybe gzipped."""

import base64
import binascii
import zlib

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class DecodeError(ValueError):
    """The body cannot be read; the message says why (answered with 400)."""


class BodyTooLarge(ValueError):
    """The body, or what it inflates to, is over the limit (answered with 413)."""


class UnsupportedContentType(ValueError):
    pass


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding != "gzip":
        raise DecodeError(f"Content-Encoding {encoding!r} is not supported (use gzip or none)")
    # Inflate in bounded steps so a small bomb cannot take the process's memory.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise DecodeError("gzip body is truncated")
    return out


def _hex_to_b64(value, size: int) -> str:
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping wants base64.

    A malformed id becomes an empty one, which validation then rejects for that span
    alone, so one bad span does not lose the rest of the batch.
    """
    if not isinstance(value, str) or not value:
        return ""
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return ""
    if len(raw) != size:
        return ""
    return base64.b64encode(raw).decode()


def _objects(container: dict, *names: str) -> list[dict]:
    """The list of objects under the first of `names` (its JSON and proto spellings)
    present. Any other shape refuses the request, naming the field: walking it as a
    list of objects would fail on the server instead."""
    name = next((n for n in names if n in container), names[0])
    value = container.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise DecodeError(f"{name} must be a list of objects")
    return value


def _fix_json_ids(doc: dict) -> None:
    for rs in _objects(doc, "resourceSpans", "resource_spans"):
        for ss in _objects(rs, "scopeSpans", "scope_spans"):
            for span in _objects(ss, "spans"):
                for key, size in (("traceId", 16), ("spanId", 8), ("parentSpanId", 8)):
                    if key in span:
                        span[key] = _hex_to_b64(span[key], size)
                for link in _objects(span, "links"):
                    link["traceId"] = _hex_to_b64(link.get("traceId"), 16)
                    link["spanId"] = _hex_to_b64(link.get("spanId"), 8)


def _fix_json_log_ids(doc: dict) -> None:
    for rl in _objects(doc, "resourceLogs", "resource_logs"):
        for sl in _objects(rl, "scopeLogs", "scope_logs"):
            for record in _objects(sl, "logRecords", "log_records"):
                for key, size in (("traceId", 16), ("spanId", 8)):
                    if key in record:
                        record[key] = _hex_to_b64(record[key], size)


_POINT_LISTS = {
    "gauge": "dataPoints",
    "sum": "dataPoints",
    "histogram": "dataPoints",
    "exponentialHistogram": "dataPoints",
    "summary": "dataPoints",
}


def _fix_json_metric_ids(doc: dict) -> None:
    """Exemplars carry span context as hex too."""
    for rm in _objects(doc, "resourceMetrics", "resource_metrics"):
        for sm in _objects(rm, "scopeMetrics", "scope_metrics"):
            for metric in _objects(sm, "metrics"):
                for kind, points in _POINT_LISTS.items():
                    data = metric.get(kind)
                    if not isinstance(data, dict):
                        continue
                    for point in _objects(data, points, "data_points"):
                        for exemplar in _objects(point, "exemplars"):
                            exemplar["traceId"] = _hex_to_b64(exemplar.get("traceId"), 16)
                            exemplar["spanId"] = _hex_to_b64(exemplar.get("spanId"), 8)


# What each OTLP/HTTP path takes: its message, the list its JSON starts with, and the
# hex ids its JSON carries.
_FORMS = {
    ExportTraceServiceRequest: ("resourceSpans", _fix_json_ids),
    ExportLogsServiceRequest: ("resourceLogs", _fix_json_log_ids),
    ExportMetricsServiceRequest: ("resourceMetrics", _fix_json_metric_ids),
}


def decode_request(body: bytes, content_type: str | None, message=ExportTraceServiceRequest):
    """`body` as an instance of `message` (ExportTraceServiceRequest by default)."""
    kind = media_type(content_type)
    request = message()
    what = message.DESCRIPTOR.name
    top, fix_ids = _FORMS[message]
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"body is not a valid OTLP protobuf {what}: {exc}") from None
        return request
    if kind == JSON:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DecodeError(f"body must be a JSON object with {top}")
        fix_ids(doc)
        try:
            json_format.ParseDict(doc, request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise DecodeError(f"body is not a valid OTLP/JSON {what}: {exc}") from None
        except RecursionError:
            # orjson takes 1,024 levels; the parser's recursion ends sooner.
            raise DecodeError("body nests values too deeply") from None
        return request
    raise UnsupportedContentType(
        f"Content-Type {content_type!r} is not supported (use {PROTOBUF} or {JSON})"
    )
