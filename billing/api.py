"""The billing REST API: prices, budgets, the budget check, a run's cost, usage and
statements. Parse, call a service or selector, render."""

import csv
import io
from datetime import date, timedelta

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from billing import selectors, services
from billing.budgets import user_as_stored
from billing.models import Budget
from billing.store import Unreachable
from controlplane.api_base import TenantAPIView
from controlplane.models import Scope
from controlplane.services import ServiceError


def _invalid(exc: ServiceError) -> ValidationError:
    field = getattr(exc, "field", None)
    return ValidationError({field: [str(exc)]} if field else [str(exc)])


def _call(fn, **kwargs):
    try:
        return fn(**kwargs)
    except ServiceError as exc:
        raise _invalid(exc) from None


class PricesView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "PUT": Scope.ADMIN}

    @extend_schema(
        summary="The effective price book: the newest version, the tenant's overrides in place"
    )
    def get(self, request):
        return Response(selectors.price_book_effective())

    @extend_schema(
        summary="Set the tenant's price overrides (replaces them all)",
        description='Body: {"entries": [{"provider", "model", "input_usd_per_mtok", '
        '"output_usd_per_mtok", "cache_read_usd_per_mtok", "cache_write_usd_per_mtok"}], '
        '"storage": {"database" | "STANDARD" | "STANDARD_IA" | "GLACIER_IR": USD per '
        "GB-month}}. Either key may be left out: the overrides it sets are then kept.",
    )
    def put(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        unknown = sorted(set(data) - {"entries", "storage"})
        if unknown:
            raise ValidationError({unknown[0]: ["unknown field (known: entries, storage)"]})
        if not data:
            raise ValidationError(
                {"entries": ["is required (or storage): a list of price entries"]}
            )
        nulls = sorted(k for k, v in data.items() if v is None)
        if nulls:
            raise ValidationError({nulls[0]: ["must not be null"]})
        _call(
            services.prices_set,
            tenant=request.tenant,
            entries=data.get("entries"),
            storage=data.get("storage"),
            actor=self.actor,
        )
        return Response(selectors.price_book_effective())


class BudgetListView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "POST": Scope.ADMIN}

    @extend_schema(summary="The tenant's budgets, each with its current spend and reservations")
    def get(self, request):
        return Response(selectors.budgets_with_spend(selectors.budget_list()))

    @extend_schema(
        summary="Create a budget",
        description='{"scope": "tenant"|"agent"|"run"|"user", "agent": name, "user": '
        "user id (scope user: the spans' user.id, enduser.id ..., redacted as spans are), "
        '"period": "day"|"month"|"lifetime", "cap_usd": "50.00", "thresholds": [0.5, 0.8, 1.0]}',
    )
    def post(self, request):
        budget = _call(
            services.budget_create, tenant=request.tenant, data=request.data, actor=self.actor
        )
        return Response(selectors.budgets_with_spend([budget])[0], status=201)


class BudgetSettingsView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "PUT": Scope.ADMIN}

    @extend_schema(
        summary="The tenant's budget settings",
        description="fail_open: when the budget store cannot be reached, calls go ahead "
        "unheld (each run's first such call is audited) instead of being refused.",
    )
    def get(self, request):
        return Response(selectors.account_json())

    @extend_schema(summary="Set the tenant's budget settings", description='{"fail_open": false}')
    def put(self, request):
        data = request.data
        if not isinstance(data, dict):
            raise ValidationError({"body": ["must be a JSON object"]})
        unknown = set(data) - {"fail_open"}
        if unknown:
            raise ValidationError({sorted(unknown)[0]: ["unknown field (known: fail_open)"]})
        if "fail_open" not in data:
            raise ValidationError({"fail_open": ["is required: true or false"]})
        _call(
            services.account_set,
            tenant=request.tenant,
            fail_open=data["fail_open"],
            actor=self.actor,
        )
        return Response(selectors.account_json())


class BudgetDetailView(TenantAPIView):
    parser_classes = [JSONParser]
    required_scope = {"GET": Scope.READ, "PUT": Scope.ADMIN, "DELETE": Scope.ADMIN}

    def _budget(self, budget_id: int) -> Budget:
        budget = selectors.budget_get(budget_id=budget_id)
        if budget is None:
            raise NotFound(f"no budget {budget_id}")
        return budget

    @extend_schema(summary="One budget with its spend")
    def get(self, request, budget_id: int):
        return Response(selectors.budgets_with_spend([self._budget(budget_id)])[0])

    @extend_schema(summary="Change a budget's cap, thresholds, agent or user")
    def put(self, request, budget_id: int):
        budget = _call(
            services.budget_update,
            budget=self._budget(budget_id),
            data=request.data,
            actor=self.actor,
        )
        return Response(selectors.budgets_with_spend([budget])[0])

    @extend_schema(summary="Delete a budget", responses={204: None})
    def delete(self, request, budget_id: int):
        services.budget_delete(budget=self._budget(budget_id), actor=self.actor)
        return Response(status=204)


class BudgetCheckView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(
        summary="May this agent (for this user) make its next call? (for external agents, "
        "before each call)",
        parameters=[
            OpenApiParameter("agent", str, description="the agent's name"),
            OpenApiParameter("user", str, description="the user the call is for"),
        ],
    )
    def get(self, request):
        agent = request.query_params.get("agent", "")
        user = request.query_params.get("user", "")
        if not agent and not user:
            raise ValidationError({"agent": ["is required: the agent's name, or a user"]})
        if len(agent) > 255 or len(user) > 255:
            raise ValidationError({"agent" if len(agent) > 255 else "user": ["is too long"]})
        if user:
            user = user_as_stored(tenant_id=request.tenant.pk, user=user)
        try:
            return Response(
                selectors.budget_check(tenant_id=request.tenant.pk, agent=agent, user=user)
            )
        except Unreachable:
            return Response(
                {"error": "unavailable", "detail": "the budget store cannot be reached"}, status=503
            )


class RunCostView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(
        summary="A run's cost line by line: LLM tokens, tools, sandbox, storage",
        description="`storage` lines are one a day, accrued by each storage count (at "
        "most an hour old): the run's trace's bytes (its row, then its span rows while "
        "hot or its bundle once warm or cold; `bytes` by place) at the tenant's storage "
        "prices (`usd_per_gb_month`) over the month's days (`month_days`). Payloads, "
        "shared by content across traces, and the run's journal are on no run's line. "
        "The lines are the run's part of the tenant's daily `storage` cost, which "
        "already counts those bytes: usage reports do not add them again.",
    )
    def get(self, request, run_id: int):
        from execution.models import Run

        run = get_object_or_404(Run.objects, pk=run_id)
        return Response(selectors.run_cost(run=run))


def _day(params, name: str, default: date) -> date:
    raw = params.get(name)
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError({name: ["must be a date (YYYY-MM-DD)"]}) from None


def _csv(rows: list[dict], filename: str) -> HttpResponse:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    resp = HttpResponse(buf.getvalue(), content_type="text/csv")
    resp["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


class UsageView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(
        summary="Cost and tokens by day, agent, model, cost kind and user",
        parameters=[
            OpenApiParameter(
                "group_by", str, description="comma-separated: day,agent,model,kind,user"
            ),
            OpenApiParameter("from", str, description="first day, YYYY-MM-DD (30 days ago)"),
            OpenApiParameter("to", str, description="last day, YYYY-MM-DD (today)"),
            OpenApiParameter("format", str, enum=["json", "csv"]),
        ],
    )
    def get(self, request):
        params = request.query_params
        unknown = set(params) - {"group_by", "from", "to", "format"}
        if unknown:
            raise ValidationError({sorted(unknown)[0]: ["unknown parameter"]})
        groups = [g for g in params.get("group_by", "day").split(",") if g]
        bad = [g for g in groups if g not in selectors.GROUPS]
        if bad or not groups:
            raise ValidationError(
                {"group_by": [f"must name some of {', '.join(selectors.GROUPS)}"]}
            )
        today = timezone.now().date()
        until = _day(params, "to", today)
        since = _day(params, "from", until - timedelta(days=30))
        if since > until:
            raise ValidationError({"from": ["must not be after 'to'"]})
        fmt = params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise ValidationError({"format": ["must be json or csv"]})
        rows = selectors.usage(since=since, until=until, group_by=groups)
        if fmt == "csv":
            return _csv(rows, f"usage-{since}-{until}.csv")
        return Response(
            {
                "from": since.isoformat(),
                "to": until.isoformat(),
                "group_by": groups,
                "items": rows,
                "cost_unknown": selectors.unknown_models(since=since, until=until),
            }
        )


class StatementView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(summary="The tenant's statement of one month (YYYY-MM)")
    def get(self, request, month: str):
        try:
            selectors.month_bounds(month)
        except ValueError:
            raise ValidationError({"month": ["must be YYYY-MM"]}) from None
        return Response(selectors.statement(month=month))
