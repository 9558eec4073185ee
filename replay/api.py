"""Replay's REST API: a run's events, and the call in doubt a member settles."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from controlplane.api_base import Invalid, TenantAPIView, or_404
from controlplane.services import ServiceError
from execution import selectors as execution_selectors
from execution.api import BudgetSpent, Conflict, RunSerializer
from execution.budget import BudgetRefused
from replay import selectors, services
from replay.models import RunEvent


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["kind", "detail", "at"]


class RunEventsView(TenantAPIView):
    @extend_schema(
        summary="What happened to a run besides its calls (worker lost, resumed, requeued, "
        "a call in doubt, reconciled)",
        responses=RunEventSerializer(many=True),
    )
    def get(self, request, run_id: int):
        run = or_404(execution_selectors.run_get(run_id=run_id))
        return Response(RunEventSerializer(selectors.run_events(run=run)[:500], many=True).data)


class InDoubtSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    tool = serializers.CharField()
    arguments = serializers.JSONField()
    idempotency_key = serializers.CharField()
    journaled_at = serializers.DateTimeField()


class ReconcileSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=services.RECONCILE_ACTIONS,
        help_text="result: the call happened and answered `result`; retry: call it again "
        "(same idempotency key); fail: fail the run",
    )
    result = serializers.JSONField(required=False, allow_null=True)
    is_error = serializers.BooleanField(required=False, default=False)

    def validate(self, data):
        if data["action"] == "result" and "result" not in data:
            raise serializers.ValidationError({"result": "action result needs a result"})
        return data


class RunReconcileView(TenantAPIView):
    @extend_schema(
        summary="The tool call in doubt of a run waiting as needs_reconciliation (null if none)",
        responses=InDoubtSerializer,
    )
    def get(self, request, run_id: int):
        run = or_404(execution_selectors.run_get(run_id=run_id))
        found = selectors.run_in_doubt(run=run)
        return Response(InDoubtSerializer(found).data if found else None)

    @extend_schema(
        summary="Settle the call in doubt: supply its result, retry it, or fail the run",
        request=ReconcileSerializer,
        responses={202: RunSerializer, 409: None},
    )
    def post(self, request, run_id: int):
        run = or_404(execution_selectors.run_get(run_id=run_id))
        body = ReconcileSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = services.run_reconcile(run=run, actor=self.actor, **body.validated_data)
        except ServiceError as exc:
            raise Conflict(str(exc)) from None
        return Response(RunSerializer(run).data, status=202)


class ReplaySerializer(serializers.Serializer):
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="the agent version to run (default: the source's)"
    )


class ForkSerializer(ReplaySerializer):
    step = serializers.IntegerField(min_value=1, help_text="the source's step to override")
    result = serializers.JSONField(
        required=False, help_text="the LLM response or tool result step `step` answers"
    )
    request = serializers.DictField(
        required=False,
        help_text="fields of the request to change (messages, system, model, max_tokens, ... "
        "or a tool's arguments); step `step` then runs live",
    )

    def validate(self, data):
        if ("result" in data) == ("request" in data):
            raise serializers.ValidationError({"result": "give one of result or request"})
        return data


class LineageSerializer(serializers.Serializer):
    source = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField(allow_null=True)
    fork_step = serializers.IntegerField(allow_null=True)
    divergence = serializers.JSONField(allow_null=True)
    derived = serializers.ListField(child=serializers.DictField())


class RunReplayView(TenantAPIView):
    @extend_schema(
        summary="Replay a run: its agent again, every call answered from its journal",
        request=ReplaySerializer,
        responses={202: RunSerializer, 409: None},
    )
    def post(self, request, run_id: int):
        source = or_404(execution_selectors.run_get(run_id=run_id))
        body = ReplaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _started(
            lambda: services.run_replay_create(
                source=source, actor=self.actor, **body.validated_data
            )
        )


class RunForkView(TenantAPIView):
    @extend_schema(
        summary="Fork a run at a step: the journal before it, that step overridden, live after",
        request=ForkSerializer,
        responses={202: RunSerializer, 409: None},
    )
    def post(self, request, run_id: int):
        source = or_404(execution_selectors.run_get(run_id=run_id))
        body = ForkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _started(
            lambda: services.run_fork_create(source=source, actor=self.actor, **body.validated_data)
        )


class RunLineageView(TenantAPIView):
    @extend_schema(
        summary="The run a run was replayed or forked from (with a replay's divergence "
        "report), and the runs made from it",
        responses=LineageSerializer,
    )
    def get(self, request, run_id: int):
        run = or_404(execution_selectors.run_get(run_id=run_id))
        return Response(LineageSerializer(selectors.run_lineage(run=run)).data)


def _started(create) -> Response:
    try:
        run = create()
    except services.SourceBusy as exc:
        raise Conflict(str(exc)) from None
    except BudgetRefused as exc:
        raise BudgetSpent(str(exc)) from None
    except ServiceError as exc:  # a step, version or override the source cannot take
        raise Invalid(str(exc)) from None
    return Response(RunSerializer(run).data, status=202)
