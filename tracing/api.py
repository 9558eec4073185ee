from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.api_base import TenantAPIView
from controlplane.models import Scope
from controlplane.services import ServiceError
from tracing import selectors, services


class PatternSerializer(serializers.Serializer):
    name = serializers.CharField()
    pattern = serializers.CharField()


class RedactionPolicySerializer(serializers.Serializer):
    custom_patterns = PatternSerializer(many=True)
    drop_keys = serializers.ListField(child=serializers.CharField())
    never_scan_keys = serializers.ListField(child=serializers.CharField())
    scan_infrastructure = serializers.BooleanField(
        required=False,
        default=False,
        help_text="also scan server.*, net.*, network.* and the host of url.* for personal data",
    )
    version = serializers.IntegerField(read_only=True)


class RedactionPolicyView(TenantAPIView):
    required_scope = Scope.ADMIN

    @extend_schema(summary="The tenant's redaction rules", responses=RedactionPolicySerializer)
    def get(self, request):
        return Response(RedactionPolicySerializer(selectors.redaction_policy_get()).data)

    @extend_schema(
        summary="Replace the tenant's redaction rules (applies to spans ingested from now on)",
        request=RedactionPolicySerializer,
        responses=RedactionPolicySerializer,
    )
    def put(self, request):
        body = RedactionPolicySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            policy = services.redaction_policy_update(
                tenant=request.tenant,
                actor=self.actor,
                custom_patterns=[dict(p) for p in body.validated_data["custom_patterns"]],
                drop_keys=body.validated_data["drop_keys"],
                never_scan_keys=body.validated_data["never_scan_keys"],
                scan_infrastructure=body.validated_data["scan_infrastructure"],
            )
        except ServiceError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(RedactionPolicySerializer(policy).data)
