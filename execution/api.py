"""The REST API of managed execution: agents and their versions, runs, tools,
credentials and the host allowlist. Parse, call a service, render."""

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response

from controlplane.api_base import TenantAPIView
from controlplane.services import ServiceError
from execution import selectors, services
from execution.models import (
    Agent,
    AgentVersion,
    AllowedHost,
    Credential,
    JournalStep,
    Run,
    RunStatus,
    ToolDefinition,
)


class Invalid(APIException):
    status_code = 400
    default_code = "invalid"


class Conflict(APIException):
    status_code = 409
    default_code = "conflict"


class TooLarge(APIException):
    status_code = 413
    default_code = "too_large"


def _found(obj):
    """The row a selector found, or 404: another tenant's row is not there."""
    if obj is None:
        raise Http404
    return obj


def _call(fn, **kwargs):
    try:
        return fn(**kwargs)
    except ServiceError as exc:
        raise Invalid(str(exc)) from None


# --- agents ------------------------------------------------------------------------------


class AgentVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = AgentVersion
        fields = [
            "id",
            "version",
            "bundle_sha256",
            "bundle_format",
            "bundle_size",
            "manifest",
            "created_at",
        ]


class AgentSerializer(serializers.ModelSerializer):
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = ["id", "name", "description", "created_at", "latest_version"]

    def get_latest_version(self, agent) -> int | None:
        return max((v.version for v in agent.versions.all()), default=None)


class AgentCreateSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, default="")


class AgentListView(TenantAPIView):
    parser_classes = [JSONParser]

    @extend_schema(summary="The tenant's agents", responses=AgentSerializer(many=True))
    def get(self, request):
        return Response(AgentSerializer(selectors.agent_list(), many=True).data)

    @extend_schema(
        summary="Create an agent", request=AgentCreateSerializer, responses={201: AgentSerializer}
    )
    def post(self, request):
        body = AgentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        agent = _call(
            services.agent_create, tenant=request.tenant, actor=self.actor, **body.validated_data
        )
        return Response(AgentSerializer(agent).data, status=201)


class AgentVersionListView(TenantAPIView):
    parser_classes = [MultiPartParser]

    @extend_schema(summary="An agent's versions", responses=AgentVersionSerializer(many=True))
    def get(self, request, agent_id: int):
        agent = _found(selectors.agent_get(agent_id=agent_id))
        versions = selectors.agent_version_list(agent=agent)
        return Response(AgentVersionSerializer(versions, many=True).data)

    @extend_schema(
        summary="Upload a bundle (.tar.gz or .zip with flightdeck.toml) as a new version",
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"bundle": {"type": "string", "format": "binary"}},
                "required": ["bundle"],
            }
        },
        responses={201: AgentVersionSerializer},
    )
    def post(self, request, agent_id: int):
        agent = _found(selectors.agent_get(agent_id=agent_id))
        upload = request.FILES.get("bundle")
        if upload is None:
            raise Invalid("send the archive as the multipart field 'bundle'")
        limit = settings.EXECUTION_BUNDLE_MAX_BYTES
        if upload.size > limit:
            raise TooLarge(f"the bundle is {upload.size} bytes, over the limit of {limit}")
        version = _call(
            services.agent_version_create,
            agent=agent,
            filename=upload.name,
            data=upload.read(),
            actor=self.actor,
        )
        return Response(AgentVersionSerializer(version).data, status=201)


# --- runs --------------------------------------------------------------------------------


class RunSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.name")
    version = serializers.IntegerField(source="version.version")

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
            "version",
            "status",
            "stop_reason",
            "error",
            "input",
            "output",
            "limits",
            "step_count",
            "tool_call_count",
            "input_tokens",
            "output_tokens",
            "trace_id",
            "attempts",
            "logs",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RunCreateSerializer(serializers.Serializer):
    agent = serializers.CharField(help_text="the agent's id or name")
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    input = serializers.JSONField(required=False, allow_null=True)
    limits = serializers.DictField(required=False, default=dict)


class RunAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    trace_id = serializers.CharField()


class RunListView(TenantAPIView):
    parser_classes = [JSONParser]

    @extend_schema(
        summary="The tenant's runs, newest first (last 200)",
        parameters=[
            OpenApiParameter("status", str, enum=RunStatus.values),
            OpenApiParameter("agent", str, description="agent name"),
        ],
        responses=RunSerializer(many=True),
    )
    def get(self, request):
        status = request.query_params.get("status")
        if status and status not in RunStatus.values:
            raise Invalid(f"status must be one of {RunStatus.values}")
        runs = selectors.run_list(status=status, agent=request.query_params.get("agent"))
        return Response(RunSerializer(runs[:200], many=True).data)

    @extend_schema(
        summary="Start a run (queued; runs on a worker)",
        request=RunCreateSerializer,
        responses={202: RunAcceptedSerializer},
    )
    def post(self, request):
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ref = body.validated_data["agent"]
        agent = selectors.agent_find(ref=ref)
        if agent is None:
            raise Invalid(f"no agent {ref!r}")
        run = _call(
            services.run_create,
            tenant=request.tenant,
            agent=agent,
            version=body.validated_data.get("version"),
            input=body.validated_data.get("input"),
            limits=body.validated_data.get("limits"),
            actor=self.actor,
        )
        return Response({"id": run.pk, "status": run.status, "trace_id": run.trace_id}, status=202)


class RunDetailView(TenantAPIView):
    @extend_schema(summary="A run: status, steps, trace id, error", responses=RunSerializer)
    def get(self, request, run_id: int):
        run = _found(selectors.run_get(run_id=run_id))
        return Response(RunSerializer(run).data)


class RunCancelView(TenantAPIView):
    @extend_schema(summary="Cancel a run", request=None, responses={202: RunSerializer, 409: None})
    def post(self, request, run_id: int):
        run = _found(selectors.run_get(run_id=run_id))
        try:
            run = services.run_cancel(run=run, actor=self.actor)
        except ServiceError as exc:
            raise Conflict(str(exc)) from None
        return Response(RunSerializer(run).data, status=202)


class JournalStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = JournalStep
        fields = [
            "step",
            "kind",
            "request_hash",
            "request",
            "result",
            "is_error",
            "duration_ms",
            "created_at",
        ]


class RunStepsView(TenantAPIView):
    @extend_schema(
        summary="A run's journal, in step order", responses=JournalStepSerializer(many=True)
    )
    def get(self, request, run_id: int):
        run = _found(selectors.run_get(run_id=run_id))
        steps = selectors.run_steps(run=run)[:1000]
        return Response(JournalStepSerializer(steps, many=True).data)


# --- tools, credentials, allowlist -------------------------------------------------------


class ToolSerializer(serializers.ModelSerializer):
    class Meta:
        model = ToolDefinition
        fields = [
            "id",
            "name",
            "description",
            "url",
            "schema",
            "credential",
            "credential_header",
            "credential_format",
            "slow",
            "timeout_seconds",
            "fallback",
            "rate_per_minute",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"name": {"validators": []}}


class ToolListView(TenantAPIView):
    parser_classes = [JSONParser]

    @extend_schema(summary="The tenant's webhook tools", responses=ToolSerializer(many=True))
    def get(self, request):
        return Response(ToolSerializer(selectors.tool_list(), many=True).data)

    @extend_schema(
        summary="Define a webhook tool", request=ToolSerializer, responses={201: ToolSerializer}
    )
    def post(self, request):
        body = ToolSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tool = _call(
            services.tool_definition_create,
            tenant=request.tenant,
            actor=self.actor,
            **body.validated_data,
        )
        return Response(ToolSerializer(tool).data, status=201)


class CredentialSerializer(serializers.ModelSerializer):
    value = serializers.CharField(write_only=True, max_length=10_000, trim_whitespace=False)

    class Meta:
        model = Credential
        fields = ["id", "name", "value", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"name": {"validators": []}}


class CredentialListView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = "admin"

    @extend_schema(
        summary="The vault's credentials (names only)", responses=CredentialSerializer(many=True)
    )
    def get(self, request):
        return Response(CredentialSerializer(selectors.credential_list(), many=True).data)

    @extend_schema(
        summary="Store a credential (write-only; encrypted at rest)",
        request=CredentialSerializer,
        responses={201: CredentialSerializer},
    )
    def post(self, request):
        body = CredentialSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        credential = _call(
            services.credential_set, tenant=request.tenant, actor=self.actor, **body.validated_data
        )
        return Response(CredentialSerializer(credential).data, status=201)


class AllowedHostSerializer(serializers.ModelSerializer):
    class Meta:
        model = AllowedHost
        fields = ["id", "host", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"host": {"validators": []}}


class AllowedHostListView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": "read", "POST": "admin"}

    @extend_schema(
        summary="Hosts the tenant's tools may call", responses=AllowedHostSerializer(many=True)
    )
    def get(self, request):
        return Response(AllowedHostSerializer(selectors.allowed_host_list(), many=True).data)

    @extend_schema(
        summary="Allow a host",
        request=AllowedHostSerializer,
        responses={201: AllowedHostSerializer},
    )
    def post(self, request):
        body = AllowedHostSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        allowed = _call(
            services.allowed_host_add,
            tenant=request.tenant,
            actor=self.actor,
            host=body.validated_data["host"],
        )
        return Response(AllowedHostSerializer(allowed).data, status=201)
