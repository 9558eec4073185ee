"""The REST API of managed execution: agents and their versions, runs, tools,
credentials and the host allowlist. Parse, call a service, render."""

import math
import re
from decimal import Decimal

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from controlplane.api_base import (
    Invalid,
    TenantAPIView,
    TenantListCreateView,
    list_create_schema,
    or_404,
)
from controlplane.models import Scope
from controlplane.services import ServiceError
from execution import selectors, services
from execution.budget import BudgetRefused
from execution.models import (
    Agent,
    AgentVersion,
    AllowedHost,
    Credential,
    Run,
    RunStatus,
    ToolDefinition,
)
from execution.tools.egress import host_entry_problem
from replay import selectors as replay_selectors
from replay.models import JournalStep

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_INPUT_DEPTH = 64


def json_value_problem(value, depth: int = 0) -> str | None:
    """Why a run's input cannot be stored and replayed, or None: nesting past
    MAX_INPUT_DEPTH (the parser and the journal recurse) or NUL in a string (PostgreSQL's
    jsonb refuses it)."""
    if depth > MAX_INPUT_DEPTH:
        return f"is nested more than {MAX_INPUT_DEPTH} levels deep"
    if isinstance(value, str):
        return "must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        problem = json_value_problem(item, depth + 1)
        if problem:
            return problem
    return None


class Conflict(APIException):
    status_code = 409
    default_code = "conflict"


class BudgetSpent(APIException):
    status_code = 402
    default_code = "budget_exceeded"


class TooLarge(APIException):
    status_code = 413
    default_code = "too_large"


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


@list_create_schema(list_summary="The tenant's agents", create_summary="Create an agent")
class AgentListView(TenantListCreateView):
    serializer_class = AgentSerializer
    input_serializer_class = AgentCreateSerializer

    def rows(self, request):
        return selectors.agent_list()

    def create(self, request, data):
        return services.agent_create(tenant=request.tenant, actor=self.actor, **data)


@list_create_schema(list_summary="An agent's versions", create_summary=None)
class AgentVersionListView(TenantListCreateView):
    parser_classes = [MultiPartParser]
    serializer_class = AgentVersionSerializer

    # The agent by id or by name, so a script can use the name it created the agent with.
    def rows(self, request, agent_ref: str):
        return selectors.agent_version_list(agent=or_404(selectors.agent_find(ref=agent_ref)))

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
    def post(self, request, agent_ref: str):
        # The body is a file, not a serializer's fields: this POST is the one of its own.
        agent = or_404(selectors.agent_find(ref=agent_ref))
        upload = request.FILES.get("bundle")
        if upload is None:
            raise Invalid("send the archive as the multipart field 'bundle'")
        limit = settings.EXECUTION_BUNDLE_MAX_BYTES
        if upload.size > limit:
            raise TooLarge(f"the bundle is {upload.size} bytes, over the limit of {limit}")
        try:
            version = services.agent_version_create(
                agent=agent, filename=upload.name, data=upload.read(), actor=self.actor
            )
        except ServiceError as exc:
            raise Invalid(str(exc)) from None
        return Response(AgentVersionSerializer(version).data, status=201)


# --- runs --------------------------------------------------------------------------------


class RunSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.name")
    version = serializers.IntegerField(source="version.version")
    cost_usd = serializers.SerializerMethodField(help_text="USD: the sum of its settlements")

    def get_cost_usd(self, run) -> str:
        costs = self.context.get("costs")
        if costs is None:
            from billing.selectors import run_costs

            costs = run_costs([run.pk])
        return costs.get(run.pk, "0")

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
            "version",
            "status",
            "stop_reason",
            "limit_hits",
            "error",
            "input",
            "output",
            "limits",
            "step_count",
            "tool_call_count",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "trace_id",
            "attempts",
            "logs",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RunCreateSerializer(serializers.Serializer):
    agent = serializers.RegexField(
        r"^[-a-zA-Z0-9_]+\Z",
        max_length=100,
        help_text="the agent's id or name",
        error_messages={"invalid": "an agent's id or name (letters, digits, - and _)"},
    )
    version = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=2**31 - 1
    )
    input = serializers.JSONField(required=False, allow_null=True)
    limits = serializers.DictField(required=False, default=dict)
    budget_usd = serializers.DecimalField(
        required=False,
        max_digits=14,
        decimal_places=6,
        min_value=Decimal("0.000001"),
        help_text="this run's own spend cap in USD (also [limits] budget_usd in the manifest)",
    )

    def validate_input(self, value):
        problem = json_value_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class RunListQuerySerializer(serializers.Serializer):
    agent = serializers.CharField(required=False, max_length=100)


class RunAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    trace_id = serializers.CharField()


@list_create_schema(
    list_summary="The tenant's runs, newest first (last 200)",
    create_summary="Start a run (queued; runs on a worker)",
    parameters=[
        OpenApiParameter("status", str, enum=RunStatus.values),
        OpenApiParameter("agent", str, description="agent name"),
    ],
)
class RunListView(TenantListCreateView):
    serializer_class = RunSerializer
    input_serializer_class = RunCreateSerializer
    created_serializer_class = RunAcceptedSerializer
    created_status = 202

    def rows(self, request):
        status = request.query_params.get("status")
        if status and status not in RunStatus.values:
            raise Invalid(f"status must be one of {RunStatus.values}")
        agent = RunListQuerySerializer(data=request.query_params)
        agent.is_valid(raise_exception=True)  # NUL would reach the database
        return selectors.run_list(status=status, agent=agent.validated_data.get("agent"))[:200]

    def get(self, request):
        from billing.selectors import run_costs

        page = list(self.rows(request))
        costs = run_costs([r.pk for r in page])  # one query for the page
        return Response(RunSerializer(page, many=True, context={"costs": costs}).data)

    def create(self, request, data):
        agent = selectors.agent_find(ref=data["agent"])
        if agent is None:
            raise Invalid(f"no agent {data['agent']!r}")
        limits = data.get("limits")
        if data.get("budget_usd") is not None:
            limits = {**(limits or {}), "budget_usd": float(data["budget_usd"])}
        try:
            return services.run_create(
                tenant=request.tenant,
                agent=agent,
                version=data.get("version"),
                input=data.get("input"),
                limits=limits,
                actor=self.actor,
            )
        except BudgetRefused as exc:
            raise BudgetSpent(str(exc)) from None


class RunDetailView(TenantAPIView):
    @extend_schema(summary="A run: status, steps, trace id, error", responses=RunSerializer)
    def get(self, request, run_id: int):
        run = or_404(selectors.run_get(run_id=run_id))
        return Response(RunSerializer(run).data)


class RunCancelView(TenantAPIView):
    @extend_schema(summary="Cancel a run", request=None, responses={202: RunSerializer, 409: None})
    def post(self, request, run_id: int):
        run = or_404(selectors.run_get(run_id=run_id))
        try:
            run = services.run_cancel(run=run, actor=self.actor)
        except ServiceError as exc:
            raise Conflict(str(exc)) from None
        return Response(RunSerializer(run).data, status=202)


class JournalStepSerializer(serializers.ModelSerializer):
    request = serializers.JSONField(read_only=True)
    result = serializers.JSONField(read_only=True)

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


def wants_unredacted(request) -> bool:
    """`?unredacted=1`: the journal's values whole, for a caller with the admin scope."""
    raw = request.query_params.get("unredacted", "")
    if raw not in ("", "0", "1", "true", "false"):
        raise Invalid(f"unredacted must be 1 or 0, not {raw[:40]!r}")
    if raw not in ("1", "true"):
        return False
    if Scope.ADMIN not in request.scopes:
        raise PermissionDenied("unredacted needs the admin scope; without it steps are redacted")
    return True


class RunStepsView(TenantAPIView):
    @extend_schema(
        summary="A run's journal, in step order: requests and results redacted as the span "
        "path redacts them (`?unredacted=1` with the admin scope: whole)",
        parameters=[OpenApiParameter("unredacted", bool, required=False)],
        responses=JournalStepSerializer(many=True),
    )
    def get(self, request, run_id: int):
        unredacted = wants_unredacted(request)
        run = or_404(selectors.run_get(run_id=run_id))
        steps = replay_selectors.steps_readable(
            selectors.run_steps(run=run)[:1000], tenant_id=run.tenant_id, unredacted=unredacted
        )
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
            "idempotent",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {
            "name": {"validators": []},
            # The slow-tool task's soft time limit bounds a call.
            "timeout_seconds": {"min_value": 0.1, "max_value": 300},
        }

    def validate_timeout_seconds(self, value):
        if not math.isfinite(value):
            raise serializers.ValidationError("must be a number of seconds")
        return value

    def validate_credential_header(self, value):
        # A header name is an RFC 9110 token: CR/LF would split the request.
        if not HEADER_NAME.fullmatch(value):
            raise serializers.ValidationError("must be an HTTP header name, e.g. X-Api-Key")
        return value

    def validate_credential_format(self, value):
        if any(c in value for c in "\r\n\x00"):
            raise serializers.ValidationError("must not contain CR, LF or NUL")
        return value


@list_create_schema(
    list_summary="The tenant's webhook tools", create_summary="Define a webhook tool"
)
class ToolListView(TenantListCreateView):
    serializer_class = ToolSerializer

    def rows(self, request):
        return selectors.tool_list()

    def create(self, request, data):
        return services.tool_definition_create(tenant=request.tenant, actor=self.actor, **data)


class CredentialSerializer(serializers.ModelSerializer):
    value = serializers.CharField(write_only=True, max_length=10_000, trim_whitespace=False)

    class Meta:
        model = Credential
        fields = ["id", "name", "value", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"name": {"validators": []}}


@list_create_schema(
    list_summary="The vault's credentials (names only)",
    create_summary="Store a credential (write-only; encrypted at rest)",
)
class CredentialListView(TenantListCreateView):
    required_scope = "admin"
    serializer_class = CredentialSerializer

    def rows(self, request):
        return selectors.credential_list()

    def create(self, request, data):
        return services.credential_set(tenant=request.tenant, actor=self.actor, **data)


class AllowedHostSerializer(serializers.ModelSerializer):
    class Meta:
        model = AllowedHost
        fields = ["id", "host", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"host": {"validators": []}}

    def validate_host(self, value: str) -> str:
        problem = host_entry_problem(value.strip().lower())
        if problem:
            raise serializers.ValidationError(problem)
        return value


@list_create_schema(list_summary="Hosts the tenant's tools may call", create_summary="Allow a host")
class AllowedHostListView(TenantListCreateView):
    required_scope = {"GET": "read", "POST": "admin"}
    serializer_class = AllowedHostSerializer

    def rows(self, request):
        return selectors.allowed_host_list()

    def create(self, request, data):
        return services.allowed_host_add(tenant=request.tenant, actor=self.actor, host=data["host"])
