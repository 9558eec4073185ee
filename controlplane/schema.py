"""OpenAPI post-processing (drf-spectacular hook): every operation documents the error
answers every API view can give, with the one error body, and the OTLP/HTTP endpoints,
which are plain Django views drf-spectacular cannot see, are described by hand."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error: a code, and what was wrong (a message, or per field).",
    "properties": {
        "error": {"type": "string", "example": "invalid"},
        "detail": {"description": "a message, or a list of messages per field"},
    },
    "required": ["error", "detail"],
}
ERRORS = {
    "400": "the request is invalid; `detail` names the field",
    "401": "no API key, or an unknown or revoked one",
    "403": "the key or the member lacks the scope this needs",
    "404": "no such object in the caller's tenant (another tenant's is not there either)",
    "405": "the path does not take this method",
    "409": "the object's state does not allow this (a finished run cannot be cancelled)",
    "413": "the body is over the limit",
    "415": "the body's Content-Type is not one this takes",
    "429": "throttled or over a rate; retry after `Retry-After` seconds",
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _otlp(*, signal: str, message: str, top: str, rejected: str, items: str) -> dict:
    return {
        "post": {
            "operationId": f"otlp_{signal}_export",
            "summary": f"OTLP/HTTP {signal} export ({message})",
            "description": "Protobuf or JSON, optionally gzip (Content-Encoding). Invalid "
            f"{items} are rejected one by one and named in `partialSuccess`; the others "
            "are stored.",
            "tags": ["otlp"],
            "security": [{"ApiKey": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {top: {"type": "array", "items": {"type": "object"}}},
                        }
                    },
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {
                    "description": f"stored; `partialSuccess` counts and names rejected {items}",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "partialSuccess": {
                                        "type": "object",
                                        "properties": {
                                            rejected: {"type": "string"},
                                            "errorMessage": {"type": "string"},
                                        },
                                    }
                                },
                            }
                        },
                        "application/x-protobuf": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                "503": _error("storage is unavailable; the exporter retries after `Retry-After`"),
            },
        }
    }


OTLP_PATHS = {
    "/v1/traces": _otlp(
        signal="traces",
        message="ExportTraceServiceRequest",
        top="resourceSpans",
        rejected="rejectedSpans",
        items="spans",
    ),
    # Coding agents' events, folded into spans (tracing/codingagents).
    "/v1/logs": _otlp(
        signal="logs",
        message="ExportLogsServiceRequest",
        top="resourceLogs",
        rejected="rejectedLogRecords",
        items="log records",
    ),
    "/v1/metrics": _otlp(
        signal="metrics",
        message="ExportMetricsServiceRequest",
        top="resourceMetrics",
        rejected="rejectedDataPoints",
        items="data points",
    ),
}


def add_errors_and_otlp(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    result["paths"].update(OTLP_PATHS)
    for operations in result["paths"].values():
        for method, operation in operations.items():
            if method in ("get", "post", "put", "patch", "delete"):
                responses = operation.setdefault("responses", {})
                for code, description in ERRORS.items():
                    if code not in responses or not responses[code].get("content"):
                        responses[code] = _error(description)
    return result
