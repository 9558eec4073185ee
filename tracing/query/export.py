"""A stored trace written out whole: as Flightdeck's own JSON (summary and spans with
everything they carried), or as OTLP/JSON that `POST /v1/traces` takes back.

The OTLP form puts back what ingest took apart: the columns as their current GenAI
attributes, messages as `gen_ai.input.messages` / `gen_ai.output.messages`, tool values
as `gen_ai.tool.call.arguments` / `.result`. What was redacted stays redacted.
"""

import orjson

from tracing import selectors
from tracing.models import Span, Trace
from tracing.query.filters import span_hex
from tracing.selectors import PayloadReader

_COLUMNS = (
    ("gen_ai.operation.name", "operation"),
    ("gen_ai.provider.name", "provider"),
    ("gen_ai.request.model", "request_model"),
    ("gen_ai.response.model", "response_model"),
    ("gen_ai.agent.name", "agent_name"),
    ("gen_ai.tool.name", "tool_name"),
)
_SPAN_COLUMNS = (
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("gen_ai.conversation.id", "session_id"),
    ("gen_ai.tool.call.id", "tool_call_id"),
    ("flightdeck.run.id", "run_id"),
)
_VALUES = (
    ("gen_ai.input.messages", "input_messages"),
    ("gen_ai.output.messages", "output_messages"),
    ("gen_ai.system_instructions", "system_instructions"),
    ("gen_ai.tool.call.arguments", "tool_call_arguments"),
    ("gen_ai.tool.call.result", "tool_call_result"),
)


def _spans(trace: Trace) -> list[Span]:
    return PayloadReader(trace.tenant_id).spans([trace.trace_id])


def _span_attributes(span: Span, detail: dict) -> dict:
    labels = selectors.span_labels(span=span)
    attributes = dict(detail["attributes"])
    for key, column in _COLUMNS:
        if labels.get(column):
            attributes.setdefault(key, labels[column])
    for key, column in _SPAN_COLUMNS:
        value = getattr(span, column)
        if value not in (None, ""):
            attributes.setdefault(key, value)
    for key, field in _VALUES:
        value = detail[field]
        if value is not None:
            attributes.setdefault(key, value if isinstance(value, str) else _json(value))
    return attributes


def _json(value) -> str:
    return orjson.dumps(value).decode()


def _any_value(value) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": _key_values(value)}}
    return {"stringValue": "" if value is None else str(value)}


def _key_values(attributes: dict) -> list[dict]:
    return [{"key": key, "value": _any_value(value)} for key, value in attributes.items()]


def trace_export_json(*, trace: Trace) -> dict:
    """The trace as this API shows it: its summary and each span's whole detail."""
    spans = []
    for span in _spans(trace):
        detail = selectors.span_detail(span=span)
        spans.append(
            {
                "span_id": span_hex(span.span_id),
                "parent_span_id": span_hex(span.parent_span_id),
                "name": selectors.span_display_name(span=span),
                "start_ns": span.start_ns,
                "end_ns": span.end_ns,
                "status_code": span.status_code,
                "status_message": span.status_message,
                **selectors.span_labels(span=span),
                "input_tokens": span.input_tokens,
                "output_tokens": span.output_tokens,
                "session_id": span.session_id,
                **detail,
            }
        )
    return {"trace_id": trace.trace_id.hex, "name": trace.name, "spans": spans}


def trace_export_otlp(*, trace: Trace) -> dict:
    """The trace as an OTLP/JSON ExportTraceServiceRequest, one resourceSpans per
    resource and scope the spans came with."""
    groups: dict[bytes, dict] = {}
    for span in _spans(trace):
        detail = selectors.span_detail(span=span)
        otlp = {
            "traceId": trace.trace_id.hex,
            "spanId": span_hex(span.span_id),
            "name": selectors.span_display_name(span=span),
            "kind": span.kind,
            "startTimeUnixNano": str(span.start_ns),
            "endTimeUnixNano": str(span.end_ns),
            "attributes": _key_values(_span_attributes(span, detail)),
            "events": [
                {
                    "name": e["name"],
                    "timeUnixNano": str(e.get("time_ns", 0)),
                    "attributes": _key_values(e.get("attributes") or {}),
                }
                for e in detail["events"]
            ],
            "links": [
                {
                    "traceId": link["trace_id"],
                    "spanId": link["span_id"],
                    "attributes": _key_values(link.get("attributes") or {}),
                }
                for link in detail["links"]
            ],
            "status": {"code": span.status_code, "message": span.status_message},
        }
        if span.parent_span_id is not None:
            otlp["parentSpanId"] = span_hex(span.parent_span_id)
        origin = orjson.dumps([detail["resource"], detail["scope"]], option=orjson.OPT_SORT_KEYS)
        group = groups.setdefault(
            origin,
            {"resource": detail["resource"], "scope": detail["scope"], "spans": []},
        )
        group["spans"].append(otlp)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _key_values(g["resource"])},
                "scopeSpans": [
                    {
                        "scope": {
                            "name": str(g["scope"].get("name", "")),
                            "version": str(g["scope"].get("version", "")),
                        },
                        "spans": g["spans"],
                    }
                ],
            }
            for g in groups.values()
        ]
    }
