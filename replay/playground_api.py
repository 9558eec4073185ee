"""The playground's REST API: a recorded LLM call as an editable request, and running
an edited one (replay/playground.py)."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import APIException, NotFound, Throttled, ValidationError
from rest_framework.response import Response

from billing.prices import usd
from controlplane.api_base import TenantAPIView
from controlplane.parsers import JSONParser
from execution.api import BudgetSpent
from execution.budget import BudgetRefused
from replay import playground, selectors
from tracing import selectors as tracing_selectors
from tracing.query.filters import FilterError, parse_span_id, parse_trace_id


class UpstreamFailed(APIException):
    status_code = 502
    default_code = "upstream_error"


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def source_span(raw_span: str, raw_trace: str | None, *, field: str):
    """The stored span these hex ids name in the caller's tenant, or a 404."""
    try:
        sid = parse_span_id(raw_span or "", "span_id")
        tid = parse_trace_id(raw_trace, "trace_id") if raw_trace else None
    except FilterError as exc:
        raise _invalid(field, f"{exc.name}: {exc.message}") from None
    span = tracing_selectors.span_get(span_id=sid, trace_id=tid)
    if span is None:
        raise NotFound(f"no span {raw_span[:16]}")
    return span


def run_payload(run) -> dict:
    return {
        "trace_id": run.trace_id,
        "status": run.status,
        "model": run.model,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": usd(run.cost_nusd),
        "created_at": run.created_at,
    }


# --- schema --------------------------------------------------------------------------


class SourceSerializer(serializers.Serializer):
    trace_id = serializers.CharField(help_text="32 hex characters")
    span_id = serializers.CharField(help_text="16 hex characters")


class RecordedSourceSerializer(SourceSerializer):
    service = serializers.CharField()
    agent = serializers.CharField()
    run_id = serializers.CharField(help_text="the managed run's id; empty for external agents")
    model = serializers.CharField(help_text="the model the call was made to")
    provider = serializers.CharField()


class RequestFieldsSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="an Anthropic model the price book lists")
    system = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    messages = serializers.ListField(
        child=serializers.DictField(),
        help_text="Messages API messages: {role: user | assistant, content: text or blocks "
        "(text, tool_use, tool_result)}",
    )
    max_tokens = serializers.IntegerField(required=False, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0)
    top_k = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    stop_sequences = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True
    )
    tools = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True)
    tool_choice = serializers.DictField(required=False, allow_null=True)


class PlaygroundRunRequestSerializer(RequestFieldsSerializer):
    source = SourceSerializer(help_text="the recorded chat span this call is made from")


class PlaygroundRunSerializer(serializers.Serializer):
    trace_id = serializers.CharField(help_text="the trace the call was recorded as")
    status = serializers.ChoiceField(choices=["ok", "error"])
    model = serializers.CharField()
    input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    cost_usd = serializers.CharField(allow_null=True, help_text="null: no price")
    created_at = serializers.DateTimeField()


class EditableRequestSerializer(RequestFieldsSerializer):
    source = RecordedSourceSerializer()
    recorded_output = serializers.ListField(
        child=serializers.DictField(), help_text="what the model answered then"
    )
    redactions = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="what the span path redacted before storing the call, by kind: that text "
        "stays redacted here",
    )
    notes = serializers.ListField(
        child=serializers.CharField(), help_text="what could not be carried over as recorded"
    )
    models = serializers.ListField(child=serializers.CharField(), help_text="models it can run")
    runs = PlaygroundRunSerializer(many=True, help_text="calls made from this span, newest first")


class PlaygroundResultSerializer(PlaygroundRunSerializer):
    source = SourceSerializer()
    content = serializers.ListField(
        child=serializers.DictField(), help_text="the answer's content blocks"
    )
    text = serializers.CharField(help_text="the answer's text blocks, joined")
    stop_reason = serializers.CharField(allow_null=True)


# --- views ---------------------------------------------------------------------------


class PlaygroundSourceView(TenantAPIView):
    @extend_schema(
        operation_id="playground_retrieve",
        summary="A recorded LLM call (a chat span, a managed run's or an external agent's) "
        "as an editable Messages API request",
        description="Text the span path redacted before storage stays redacted "
        "(`redactions` counts it). Pass trace_id when two traces could share the span id.",
        parameters=[OpenApiParameter("trace_id", str, description="32 hex characters")],
        responses=EditableRequestSerializer,
    )
    def get(self, request, span_id: str):
        unknown = set(request.query_params) - {"trace_id"}
        if unknown:
            raise _invalid(sorted(unknown)[0], "unknown parameter (known: trace_id)")
        span = source_span(span_id, request.query_params.get("trace_id"), field="span_id")
        try:
            editable = playground.playground_request(span=span)
        except playground.PlaygroundInvalid as exc:
            raise _invalid(exc.field, exc.message) from None
        source = editable["source"]
        runs = selectors.playground_runs_of(trace_id=source["trace_id"], span_id=source["span_id"])
        editable["models"] = playground.known_models(tenant_id=request.tenant.pk)
        editable["runs"] = [run_payload(r) for r in runs]
        return Response(editable)


class PlaygroundRunView(TenantAPIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="playground_create",
        summary="Run an edited copy of a recorded LLM call through the gateway's LLM path, "
        "recorded as a new trace linked to the source span",
        description="The tenant's playground rate limit and its budgets apply (the calls "
        "answer to the tenant's budgets and to agent `playground`'s).",
        request=PlaygroundRunRequestSerializer,
        responses={
            201: PlaygroundResultSerializer,
            402: OpenApiResponse(description="a budget is spent; `detail` names it"),
            502: OpenApiResponse(description="the model API failed; the call is recorded"),
        },
    )
    def post(self, request):
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise _invalid("body", "a JSON object is needed")
        source = body.get("source")
        if not isinstance(source, dict) or set(source) - {"trace_id", "span_id"}:
            raise _invalid("source", "an object of trace_id and span_id is needed")
        trace_id, span_id = source.get("trace_id"), source.get("span_id")
        if not isinstance(trace_id, str) or not isinstance(span_id, str):
            raise _invalid("source", "trace_id and span_id are hex strings")
        span = source_span(span_id, trace_id, field="source")
        try:
            result = playground.playground_run(source=span, body=body, actor=self.actor)
        except playground.PlaygroundInvalid as exc:
            raise _invalid(exc.field, exc.message) from None
        except playground.PlaygroundRateLimited as exc:
            raise Throttled(wait=exc.retry_after, detail=str(exc)) from None
        except BudgetRefused as exc:
            raise BudgetSpent(str(exc)) from None
        if result.error:
            raise UpstreamFailed(f"{result.error} (recorded as trace {result.run.trace_id})")
        return Response(result_payload(result), status=201)


def result_payload(result) -> dict:
    message = result.message or {}
    content = message.get("content") or []
    return {
        **run_payload(result.run),
        "source": {"trace_id": result.run.source_trace_id, "span_id": result.run.source_span_id},
        "content": content,
        "text": "\n".join(b.get("text", "") for b in content if b.get("type") == "text"),
        "stop_reason": message.get("stop_reason"),
    }
