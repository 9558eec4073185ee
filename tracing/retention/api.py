"""GET/PUT /api/v1/retention, legal holds, trace marks, erasure requests and storage
figures."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from controlplane.api_base import TenantAPIView, TenantListCreateView, list_create_schema, or_404
from controlplane.models import Scope
from controlplane.parsers import JSONParser
from controlplane.services import ServiceError
from tracing.api_read import trace_or_404
from tracing.retention import selectors, services
from tracing.retention.models import TIER_KEYS


def _field_error(exc: ServiceError) -> ValidationError:
    """A service's refusal names its field first ("warm_days must be ...")."""
    message = str(exc)
    name = message.split(" ", 1)[0].rstrip(":")
    return ValidationError({name: [message]})


class DaysSerializer(serializers.Serializer):
    hot_days = serializers.IntegerField(min_value=0)
    warm_days = serializers.IntegerField(min_value=0)
    cold_days = serializers.IntegerField(min_value=0)
    extended_days = serializers.IntegerField(min_value=0)


class RetentionSerializer(DaysSerializer):
    agents = serializers.DictField(
        child=DaysSerializer(partial=True), help_text="agent name to any of the same keys"
    )


class RetentionView(TenantAPIView):
    required_scope = Scope.ADMIN
    parser_classes = [JSONParser]

    @extend_schema(summary="The tenant's retention days per tier", responses=RetentionSerializer)
    def get(self, request):
        return Response(selectors.retention_policy_get().as_dict())

    @extend_schema(
        summary="Replace the tenant's retention days (hot, then warm, then cold, then deleted)",
        request=RetentionSerializer,
        responses=RetentionSerializer,
    )
    def put(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationError({"detail": ["the body must be a JSON object"]})
        unknown = sorted(set(body) - {*TIER_KEYS, "agents"})
        if unknown:
            raise ValidationError({unknown[0]: ["is not a retention field"]})
        missing = [key for key in TIER_KEYS if key not in body]
        if missing:
            raise ValidationError({missing[0]: ["This field is required."]})
        try:
            services.retention_policy_update(
                tenant=request.tenant,
                actor=self.actor,
                **{key: body[key] for key in TIER_KEYS},
                agents=body.get("agents", {}),
            )
        except ServiceError as exc:
            raise _field_error(exc) from None
        return Response(selectors.retention_policy_get().as_dict())


class LegalHoldSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    scope = serializers.ChoiceField(choices=["trace", "session", "tenant"])
    value = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=255,
        help_text="the trace id or session id (empty for the tenant)",
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    created_by = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


@list_create_schema(list_summary="Legal holds", create_summary="Hold a trace, session or tenant")
class LegalHoldListView(TenantListCreateView):
    required_scope = Scope.ADMIN
    serializer_class = LegalHoldSerializer

    def rows(self, request, **kwargs):
        return selectors.legal_hold_list()

    def create(self, request, data: dict, **kwargs):
        return services.legal_hold_create(tenant=request.tenant, actor=self.actor, **data)


class LegalHoldView(TenantAPIView):
    required_scope = Scope.ADMIN

    @extend_schema(summary="Release a legal hold", responses={204: None})
    def delete(self, request, hold_id: int):
        hold = or_404(selectors.legal_hold_get(hold_id=hold_id))
        services.legal_hold_delete(tenant=request.tenant, actor=self.actor, hold=hold)
        return Response(status=204)


class TraceMarkSerializer(serializers.Serializer):
    trace_id = serializers.CharField(help_text="32 hex characters")
    marked = serializers.BooleanField(help_text="kept at least the policy's extended_days")
    extended_days = serializers.IntegerField(help_text="the days a marked trace is kept")
    marked_by = serializers.CharField()
    marked_at = serializers.DateTimeField()


class TraceMarkView(TenantAPIView):
    """A user's mark on a trace keeps it at least `extended_days` (retention policy)."""

    required_scope = Scope.WRITE

    @extend_schema(
        operation_id="traces_mark",
        summary="Mark a trace to keep it at least the policy's extended_days",
        request=None,
        responses=TraceMarkSerializer,
    )
    def put(self, request, trace_id: str):
        trace = trace_or_404(trace_id)
        mark = services.trace_mark_set(
            tenant=request.tenant, actor=self.actor, trace_hex=trace.trace_id.hex
        )
        return Response(
            {
                "trace_id": mark.trace_hex,
                "marked": True,
                "extended_days": selectors.retention_policy_get()
                .of(trace.agent_name)
                .extended_days,
                "marked_by": mark.created_by,
                "marked_at": mark.created_at.isoformat(),
            }
        )

    @extend_schema(
        operation_id="traces_unmark",
        summary="Remove a trace's mark: the policy's days apply again",
        responses={204: None},
    )
    def delete(self, request, trace_id: str):
        trace = trace_or_404(trace_id)
        if not services.trace_mark_clear(
            tenant=request.tenant, actor=self.actor, trace_hex=trace.trace_id.hex
        ):
            raise NotFound(f"trace {trace.trace_id.hex} is not marked")
        return Response(status=204)


class ErasureSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    session_id = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    user_id = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=255,
        help_text="matches user.id and enduser.id",
    )
    status = serializers.CharField(read_only=True)
    removed = serializers.JSONField(read_only=True, help_text="counts and trace ids, no content")
    created_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)


@list_create_schema(
    list_summary="Erasure requests", create_summary="Erase every trace of a session or user"
)
class ErasureListView(TenantListCreateView):
    required_scope = Scope.ADMIN
    serializer_class = ErasureSerializer
    created_status = 202

    def rows(self, request, **kwargs):
        return selectors.erasure_request_list()

    def create(self, request, data: dict, **kwargs):
        return services.erasure_request_create(tenant=request.tenant, actor=self.actor, **data)


class ErasureView(TenantAPIView):
    required_scope = Scope.ADMIN

    @extend_schema(summary="An erasure request and what it removed", responses=ErasureSerializer)
    def get(self, request, request_id: int):
        row = selectors.erasure_request_get(request_id=request_id)
        if row is None:
            raise NotFound(f"no erasure request {request_id}")
        return Response(ErasureSerializer(row).data)


class StorageView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(
        summary="Bytes stored per tier (database and blob store), as last counted, and "
        "what they cost a month",
        description="Each tier's bytes are priced per GB-month where they sit (`places`: "
        "the database, and the blob store's S3 storage class); the hot tier's blob bytes "
        "include the tenant's agent bundles (STANDARD, each archive once), recounted on "
        "each upload. Priced at the tenant's storage "
        "prices (GET /api/v1/prices), the prices billing's daily `storage` cost is "
        "charged at. Money is a decimal string of USD.",
        responses=inline_serializer(
            "StorageUsage",
            {
                "tier": serializers.CharField(),
                "traces": serializers.IntegerField(),
                "db_bytes": serializers.IntegerField(),
                "blob_bytes": serializers.IntegerField(),
                "db_cost_usd_month": serializers.CharField(),
                "blob_cost_usd_month": serializers.CharField(),
                "cost_usd_month": serializers.CharField(),
                "places": inline_serializer(
                    "StoragePlace",
                    {
                        "place": serializers.CharField(
                            help_text="database, STANDARD, STANDARD_IA or GLACIER_IR"
                        ),
                        "bytes": serializers.IntegerField(),
                        "usd_per_gb_month": serializers.CharField(),
                        "cost_usd_month": serializers.CharField(),
                    },
                    many=True,
                ),
                "updated_at": serializers.DateTimeField(allow_null=True),
            },
            many=True,
        ),
    )
    def get(self, request):
        return Response(selectors.storage_usage())
