from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import selectors, services
from controlplane.api_base import TenantAPIView, TenantListCreateView, list_create_schema, or_404
from controlplane.health import health_report
from controlplane.models import ApiKey, AuditEvent, Scope


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Is the platform up?",
        responses={
            200: inline_serializer(
                "Health",
                {"status": serializers.CharField(), "checks": serializers.DictField()},
            ),
            503: None,
        },
        auth=[],
    )
    def get(self, request):
        ok, checks = health_report()
        return Response(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
        )


class TenantSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="tenant.id")
    slug = serializers.CharField(source="tenant.slug")
    name = serializers.CharField(source="tenant.name")
    created_at = serializers.DateTimeField(source="tenant.created_at")
    scopes = serializers.ListField(child=serializers.CharField())


class TenantView(TenantAPIView):
    required_scope = None  # any key of the tenant may ask who it belongs to

    @extend_schema(summary="The caller's tenant", responses=TenantSerializer)
    def get(self, request):
        data = {"tenant": request.tenant, "scopes": sorted(request.scopes)}
        return Response(TenantSerializer(data).data)


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), allow_empty=False
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The key itself. Shown once, never again.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


@list_create_schema(
    list_summary="The tenant's API keys",
    create_summary="Create an API key (the key is in this response only)",
)
class ApiKeyListView(TenantListCreateView):
    parser_classes = TenantAPIView.parser_classes  # DRF's defaults: JSON and forms
    required_scope = Scope.ADMIN
    serializer_class = ApiKeySerializer
    input_serializer_class = ApiKeyCreateSerializer
    created_serializer_class = ApiKeyCreatedSerializer

    def rows(self, request):
        return selectors.api_key_list()

    def create(self, request, data):
        key, raw = services.api_key_create(
            tenant=request.tenant, name=data["name"], scopes=data["scopes"], actor=self.actor
        )
        key.key = raw
        return key


class ApiKeyRevokeView(TenantAPIView):
    required_scope = Scope.ADMIN

    @extend_schema(summary="Revoke an API key", request=None, responses=ApiKeySerializer)
    def post(self, request, key_id: int):
        key = or_404(selectors.api_key_get(key_id=key_id))
        services.api_key_revoke(key=key, actor=self.actor)
        return Response(ApiKeySerializer(key).data)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "action", "target_type", "target_id", "data", "actor"]


class AuditEventListView(TenantAPIView):
    required_scope = Scope.ADMIN

    @extend_schema(
        summary="The tenant's audit log, newest first (last 200)",
        responses=AuditEventSerializer(many=True),
    )
    def get(self, request):
        events = selectors.audit_event_list()[:200]
        return Response(AuditEventSerializer(events, many=True).data)
