"""The trace read API: search, one trace's span tree, one span's payloads, sessions.

Views parse (tracing/query/filters.py), call a selector and render. Responses are built
as plain dicts (a 2,000-span tree through serializer instances costs tens of ms); the
serializers below describe them for the OpenAPI schema, and tests hold the two together.
"""

from datetime import UTC, datetime, timedelta

import orjson
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from controlplane.api_base import TenantAPIView
from controlplane.models import Scope
from tracing import selectors
from tracing.models import Trace, span_name
from tracing.query import sessions, traces
from tracing.query.filters import (
    TRACE_FILTERS,
    FilterError,
    parse_limit,
    parse_span_id,
    parse_trace_filters,
    parse_trace_id,
    span_hex,
)
from tracing.retention.models import Tier
from tracing.retention.selectors import trace_mark_get

STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


TIER_NAMES = {t.value: t.label.lower() for t in Tier}


def _iso_ns(ns: int) -> str:
    # Adding a timedelta is several times faster than fromtimestamp() per span.
    return (EPOCH + timedelta(microseconds=ns // 1000)).isoformat()


def trace_summary(trace: Trace) -> dict:
    return {
        "trace_id": trace.trace_id.hex,
        "name": trace.name,
        "service_name": trace.service_name,
        "agent_name": trace.agent_name,
        "session_id": trace.session_id,
        "run_id": trace.run_id,
        "model": trace.model,
        "user_id": trace.user_id,
        "start_time": trace.start_time.isoformat(),
        "end_time": trace.end_time.isoformat(),
        "duration_ms": trace.duration_ms,
        "status": STATUS_NAMES.get(trace.status, "unset"),
        "span_count": trace.span_count,
        "error_count": trace.error_count,
        "input_tokens": trace.input_tokens,
        "output_tokens": trace.output_tokens,
        "tier": TIER_NAMES.get(trace.tier, "hot"),
        "text_archived": trace.tier == Tier.COLD,
    }


def span_summary(row: dict, trace_start_ns: int) -> dict:
    """A span row (selector dict or model fields) as the API shows it, without payloads."""
    return {
        "span_id": span_hex(row["span_id"]),
        "parent_span_id": span_hex(row["parent_span_id"]),
        "name": row["name"],
        "kind": row["kind"],
        "operation": row["operation"],
        "start_time": _iso_ns(row["start_ns"]),
        "start_offset_ms": (row["start_ns"] - trace_start_ns) / 1e6,
        "duration_ms": (row["end_ns"] - row["start_ns"]) / 1e6,
        "status": STATUS_NAMES.get(row["status_code"], "unset"),
        "status_message": row["status_message"],
        "service_name": row["service_name"],
        "agent_name": row["agent_name"],
        "provider": row["provider"],
        "request_model": row["request_model"],
        "response_model": row["response_model"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "session_id": row["session_id"],
        "tool_name": row["tool_name"],
        "tool_call_id": row["tool_call_id"],
        "redactions": row["redactions"] or {},
    }


class FastJSONRenderer(JSONRenderer):
    """orjson: a 2,000-span tree serialises several times faster than with json."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return b"" if data is None else orjson.dumps(data)


class ReadView(TenantAPIView):
    required_scope = Scope.READ
    renderer_classes = [FastJSONRenderer]


def _invalid(exc: FilterError) -> ValidationError:
    return ValidationError({exc.name: [exc.message]})


# --- schema --------------------------------------------------------------------------


class TraceSummarySerializer(serializers.Serializer):
    trace_id = serializers.CharField(help_text="32 hex characters")
    name = serializers.CharField(help_text="the root span's name")
    service_name = serializers.CharField()
    agent_name = serializers.CharField()
    session_id = serializers.CharField()
    run_id = serializers.CharField()
    model = serializers.CharField()
    user_id = serializers.CharField(help_text="user.id, enduser.id, langfuse.user.id ...")
    start_time = serializers.DateTimeField()
    end_time = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    status = serializers.ChoiceField(choices=["unset", "ok", "error"])
    span_count = serializers.IntegerField()
    error_count = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    tier = serializers.ChoiceField(
        choices=["hot", "warm", "cold", "deleting"],
        help_text="retention tier: hot rows, a warm bundle, a cold (archived) bundle",
    )
    text_archived = serializers.BooleanField(
        help_text="cold: listed by its summary, its text no longer searched"
    )
    cost_usd = serializers.CharField(
        allow_null=True, help_text="USD, counting each LLM call once; null until costed"
    )
    cost_unknown = serializers.BooleanField(help_text="a call's model has no price")


class TraceDetailSummarySerializer(TraceSummarySerializer):
    marked = serializers.BooleanField(
        help_text="a user marked it to keep: PUT/DELETE /api/v1/traces/{id}/mark"
    )


class SpanSummarySerializer(serializers.Serializer):
    span_id = serializers.CharField(help_text="16 hex characters")
    parent_span_id = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    kind = serializers.IntegerField()
    operation = serializers.CharField(help_text="gen_ai.operation.name: chat, execute_tool, ...")
    start_time = serializers.DateTimeField()
    start_offset_ms = serializers.FloatField(help_text="since the trace started")
    duration_ms = serializers.FloatField()
    status = serializers.ChoiceField(choices=["unset", "ok", "error"])
    status_message = serializers.CharField()
    service_name = serializers.CharField()
    agent_name = serializers.CharField()
    provider = serializers.CharField()
    request_model = serializers.CharField()
    response_model = serializers.CharField()
    input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    session_id = serializers.CharField()
    tool_name = serializers.CharField()
    tool_call_id = serializers.CharField()
    redactions = serializers.DictField(
        child=serializers.IntegerField(), help_text="values redacted, by kind"
    )
    cost_usd = serializers.CharField(
        allow_null=True, help_text="USD, counting each LLM call once; null until costed"
    )
    cost_unknown = serializers.BooleanField(help_text="a call's model has no price")


class SpanNodeSerializer(SpanSummarySerializer):
    children = serializers.ListField(child=serializers.DictField(), help_text="span nodes")


class SpanDetailSerializer(SpanSummarySerializer):
    trace_id = serializers.CharField()
    input_messages = serializers.JSONField(allow_null=True, help_text="GenAI semconv messages")
    output_messages = serializers.JSONField(allow_null=True)
    system_instructions = serializers.JSONField(allow_null=True)
    tool_call_arguments = serializers.JSONField(allow_null=True)
    tool_call_result = serializers.JSONField(allow_null=True)
    attributes = serializers.DictField()
    events = serializers.ListField(child=serializers.DictField())
    links = serializers.ListField(child=serializers.DictField())
    resource = serializers.DictField()


class SessionSummarySerializer(serializers.Serializer):
    session_id = serializers.CharField()
    trace_count = serializers.IntegerField()
    first_start = serializers.DateTimeField()
    last_start = serializers.DateTimeField()
    last_end = serializers.DateTimeField()
    error_count = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    service_name = serializers.CharField()
    agent_name = serializers.CharField()
    cost_usd = serializers.CharField(
        allow_null=True, help_text="USD, counting each LLM call once; null until costed"
    )
    cost_unknown = serializers.BooleanField(help_text="a call's model has no price")


PAGE_PARAMETERS = [
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
    OpenApiParameter("limit", int, description="1 to 200, default 50"),
]
TRACE_PARAMETERS = [
    OpenApiParameter(name, str, many=(name == "attr"), description=description)
    for name, description in TRACE_FILTERS.items()
] + PAGE_PARAMETERS


def _page(name: str, item) -> serializers.Serializer:
    return inline_serializer(
        f"{name}Page",
        {"items": item(many=True), "next_cursor": serializers.CharField(allow_null=True)},
    )


def session_json(row: dict) -> dict:
    return {
        **row,
        "first_start": row["first_start"].isoformat(),
        "last_start": row["last_start"].isoformat(),
        "last_end": row["last_end"].isoformat(),
        "input_tokens": row["input_tokens"] or 0,
        "output_tokens": row["output_tokens"] or 0,
    }


def with_costs(items: list[dict], *, dimension: str = "trace", key: str = "trace_id") -> list:
    """Billing's cost_usd and cost_unknown on each item (one query). Null until the
    item's spans are costed, seconds after ingest; cost_unknown: a call had no price."""
    from billing.selectors import totals

    costs = totals(dimension, [i[key] for i in items])
    for item in items:
        found = costs.get(item[key])
        item["cost_usd"] = found["cost_usd"] if found else None
        item["cost_unknown"] = found["cost_unknown"] if found else False
    return items


# --- views ---------------------------------------------------------------------------


class TraceListView(ReadView):
    @extend_schema(
        operation_id="traces_list",
        summary="Search traces, newest first",
        description="Every filter narrows the search. `q` is full text over messages and tool "
        "payloads; attribute and full-text matches cover spans once the search index has "
        "taken them in (seconds after ingest). A bad filter answers 400 naming it.",
        parameters=TRACE_PARAMETERS,
        responses=_page("Trace", TraceSummarySerializer),
    )
    def get(self, request):
        try:
            filters = parse_trace_filters(request.query_params)
            limit = parse_limit(request.query_params)
            rows, next_cursor = traces.trace_page(
                filters=filters, cursor=request.query_params.get("cursor", ""), limit=limit
            )
        except FilterError as exc:
            raise _invalid(exc) from None
        items = with_costs([trace_summary(t) for t in rows])
        return Response({"items": items, "next_cursor": next_cursor})


def trace_or_404(raw: str) -> Trace:
    try:
        trace_id = parse_trace_id(raw)
    except FilterError as exc:
        raise _invalid(exc) from None
    trace = traces.trace_get(trace_id=trace_id)
    if trace is None:
        raise NotFound(f"no trace {raw}")
    return trace


def span_tree(rows: list[dict], trace_start_ns: int, costs: dict[int, dict]) -> list[dict]:
    """Nest the selector's tree-ordered rows, each with its LLM call's cost (`costs`,
    billing's span_costs, by span id) where it has one."""
    nodes, roots = {}, []
    for row in rows:
        node = span_summary(row, trace_start_ns)
        found = costs.get(row["span_id"])
        node["cost_usd"] = found["cost_usd"] if found else None
        node["cost_unknown"] = found["cost_unknown"] if found else False
        node["children"] = []
        nodes[row["span_id"]] = node
        if row["parent"] is None:
            roots.append(node)
        else:
            nodes[row["parent"]]["children"].append(node)
    return roots


class TraceDetailView(ReadView):
    @extend_schema(
        operation_id="traces_retrieve",
        summary="One trace: summary and span tree (payloads per span: GET /api/v1/spans/{id})",
        responses=inline_serializer(
            "TraceDetail",
            {"trace": TraceDetailSummarySerializer(), "spans": SpanNodeSerializer(many=True)},
        ),
    )
    def get(self, request, trace_id: str):
        from billing.selectors import span_costs

        trace = trace_or_404(trace_id)
        rows = traces.trace_spans(trace_id=trace.trace_id)
        spans = span_tree(rows, trace.start_ns, span_costs(trace_id=trace.trace_id))
        summary = with_costs([trace_summary(trace)])[0]
        summary["marked"] = trace_mark_get(trace_hex=trace.trace_id.hex) is not None
        return Response({"trace": summary, "spans": spans})


def span_payload(span) -> dict:
    """A span with everything it carried, payloads read back from the store."""
    row = {f: getattr(span, f) for f in traces.SPAN_FIELDS if f != "labels_id"}
    row.update(selectors.span_labels(span=span))
    row["name"] = span_name(row)
    trace = Trace.objects.filter(trace_id=span.trace_id).only("start_ns").first()
    start = trace.start_ns if trace else span.start_ns
    detail = selectors.span_detail(span=span)
    detail.pop("redactions", None)
    detail.pop("scope", None)
    from billing.selectors import span_costs

    cost = span_costs(trace_id=span.trace_id).get(span.span_id, {})
    return {
        **span_summary(row, start),
        "cost_usd": cost.get("cost_usd"),
        "cost_unknown": cost.get("cost_unknown", False),
        "trace_id": span.trace_id.hex,
        **detail,
    }


class SpanDetailView(ReadView):
    @extend_schema(
        operation_id="spans_retrieve",
        summary="One span with its messages, tool payloads, attributes and events",
        description="Span ids are unique within a trace; pass trace_id when two traces "
        "could share one (without it the latest such span answers).",
        parameters=[OpenApiParameter("trace_id", str, description="32 hex characters")],
        responses=SpanDetailSerializer,
    )
    def get(self, request, span_id: str):
        unknown = set(request.query_params) - {"trace_id"}
        try:
            if unknown:
                raise FilterError(sorted(unknown)[0], "unknown parameter (known: trace_id)")
            sid = parse_span_id(span_id)
            raw_trace = request.query_params.get("trace_id")
            tid = parse_trace_id(raw_trace) if raw_trace else None
        except FilterError as exc:
            raise _invalid(exc) from None
        span = selectors.span_get(span_id=sid, trace_id=tid)
        if span is None:
            raise NotFound(f"no span {span_id}")
        return Response(span_payload(span))


class SessionListView(ReadView):
    @extend_schema(
        operation_id="sessions_list",
        summary="Sessions (conversation ids), latest activity first",
        parameters=PAGE_PARAMETERS,
        responses=_page("Session", SessionSummarySerializer),
    )
    def get(self, request):
        try:
            unknown = set(request.query_params) - {"cursor", "limit"}
            if unknown:
                raise FilterError(sorted(unknown)[0], "unknown parameter (known: cursor, limit)")
            limit = parse_limit(request.query_params)
            rows, next_cursor = sessions.session_page(
                cursor=request.query_params.get("cursor", ""), limit=limit
            )
        except FilterError as exc:
            raise _invalid(exc) from None
        items = with_costs([session_json(r) for r in rows], dimension="session", key="session_id")
        return Response({"items": items, "next_cursor": next_cursor})


class SessionDetailView(ReadView):
    @extend_schema(
        operation_id="sessions_retrieve",
        summary="One session: its traces in the order they started",
        responses=inline_serializer(
            "SessionDetail",
            {"session": SessionSummarySerializer(), "traces": TraceSummarySerializer(many=True)},
        ),
    )
    def get(self, request, session_id: str):
        rows = sessions.session_traces(session_id=session_id)
        if not rows:
            raise NotFound(f"no session {session_id}")
        summary = sessions.session_summary(rows)
        session = with_costs([session_json(summary)], dimension="session", key="session_id")[0]
        return Response(
            {"session": session, "traces": with_costs([trace_summary(t) for t in rows])}
        )


class SessionMessagesView(ReadView):
    @extend_schema(
        operation_id="sessions_messages",
        summary="A session's conversation: each message once, in order",
        description=(
            "Every step of an agent resends the conversation; each message is listed once, "
            "with the trace and span it first appeared in. System instructions come as a "
            "message of role `system` where they first appear or change."
        ),
        responses=inline_serializer(
            "SessionMessages",
            {
                "session_id": serializers.CharField(),
                "items": inline_serializer(
                    "SessionMessage",
                    {
                        "trace_id": serializers.CharField(),
                        "span_id": serializers.CharField(),
                        "message": serializers.JSONField(help_text="GenAI semconv message"),
                    },
                    many=True,
                ),
            },
        ),
    )
    def get(self, request, session_id: str):
        rows = sessions.session_traces(session_id=session_id)
        if not rows:
            raise NotFound(f"no session {session_id}")
        items = []
        for group in sessions.session_conversation(traces=rows):
            trace_id = group["trace"].trace_id.hex
            if group["system"] is not None:
                message = {"role": "system", "parts": group["system"]}
                span_id = span_hex(group["system_span_id"])
                items.append({"trace_id": trace_id, "span_id": span_id, "message": message})
            for message, span_id in zip(group["messages"], group["span_ids"], strict=True):
                items.append(
                    {"trace_id": trace_id, "span_id": span_hex(span_id), "message": message}
                )
        return Response({"session_id": session_id, "items": items})
