"""OpenAPI post-processing (drf-spectacular hook): every operation documents the error
answers every API view can give, with the one error body, and the OTLP/HTTP endpoint,
which is a plain Django view drf-spectacular cannot see, is described by hand."""

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


OTLP = {
    "post": {
        "operationId": "otlp_traces_export",
        "summary": "OTLP/HTTP trace export (ExportTraceServiceRequest)",
        "description": "Protobuf or JSON, optionally gzip (Content-Encoding). Invalid spans "
        "are rejected one by one and named in `partialSuccess`; the others are stored.",
        "tags": ["otlp"],
        "security": [{"ApiKey": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "resourceSpans": {"type": "array", "items": {"type": "object"}}
                        },
                    }
                },
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {
                "description": "stored; `partialSuccess` counts and names rejected spans",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "partialSuccess": {
                                    "type": "object",
                                    "properties": {
                                        "rejectedSpans": {"type": "string"},
                                        "errorMessage": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "503": _error("storage is unavailable; the exporter retries after `Retry-After`"),
        },
    }
}


def add_errors_and_otlp(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    result["paths"]["/v1/traces"] = OTLP
    for operations in result["paths"].values():
        for method, operation in operations.items():
            if method in ("get", "post", "put", "patch", "delete"):
                responses = operation.setdefault("responses", {})
                for code, description in ERRORS.items():
                    if code not in responses or not responses[code].get("content"):
                        responses[code] = _error(description)
    return result
