"""Coding agents' folded spans go through spans_ingest like any other: billing costs
their chat spans from the price book (beside the agent's own figure), their spend
counts toward the tenant's and the agent's budgets, and the alert detectors see them."""

import json
from datetime import UTC, datetime

import pytest
from django.db.models import Sum
from django.test import TestCase
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from alerts.models import Alert, AlertRule
from alerts.tasks import detect_spans
from billing.budgets import windows_for
from billing.models import Budget, BudgetWindow, SpanCost, UsageDaily, call_labels
from billing.selectors import budget_check
from controlplane.tenancy import tenant_scope
from tests.alerts.helpers import announced

# The seed price book, reloaded after an earlier transactional test's flush emptied it.
from tests.billing.conftest import price_book  # noqa: F401
from tests.billing.helpers import cost_queue
from tests.tracing.codingagents import CLAUDE_CODE, fixture, otlp_json
from tracing import labels
from tracing.codingagents.fold import log_records_ingest
from tracing.ingest.decode import decode_request

pytestmark = pytest.mark.django_db(transaction=True)
START = 1_800_000_000 * 10**9


def ingest(tenant, doc):
    request = decode_request(json.dumps(doc).encode(), "application/json", ExportLogsServiceRequest)
    return log_records_ingest(tenant_id=tenant.id, request=request)


def test_their_spend_is_costed_and_counts_toward_budgets(acme, settings):
    with tenant_scope(acme):
        tenant_budget = Budget.objects.create(
            tenant=acme, scope="tenant", period="lifetime", cap_nusd=10**9, thresholds=[1.0]
        )
        agent_budget = Budget.objects.create(
            tenant=acme,
            scope="agent",
            agent="claude-code",
            period="lifetime",
            cap_nusd=30_000_000,  # $0.03: the session's calls cost more
            thresholds=[1.0],
        )
    with cost_queue(settings) as drain:
        result = ingest(acme, otlp_json(fixture(CLAUDE_CODE), start_ns=START))
        assert (result.accepted, result.rejected) == (10, 0)
        drain()
    with tenant_scope(acme):
        rows = list(SpanCost.objects.all())
    # Each row's (agent, provider, model), as costing read them from its span's labels.
    values = labels.values_of(acme.id, {c.labels_id for c in rows})
    costs = {call_labels(values[c.labels_id])[2]: c for c in rows}
    # Price book (2025-11): claude-sonnet-4-5 $3 / $15 / $0.30 cache read / $3.75 cache
    # write per million tokens; claude-haiku-4-5 $1 / $5.
    sonnet = (1200 + 900) * 3 + (310 + 420) * 15 + (18000 + 19500) * 0.30 + (2100 + 600) * 3.75
    haiku = 800 * 1 + 150 * 5
    assert len(costs) == 2 and SpanCost.all_tenants.count() == 3
    assert costs["claude-haiku-4-5-20251001"].cost_nusd == haiku * 1000
    haiku_labels = values[costs["claude-haiku-4-5-20251001"].labels_id]
    assert call_labels(haiku_labels)[0] == "claude-code"
    with tenant_scope(acme):
        total = sum(c.cost_nusd for c in SpanCost.objects.all())
    assert total == round((sonnet + haiku) * 1000)
    check = budget_check(tenant_id=acme.id, agent="claude-code")
    spent = {b["id"]: b["spent_usd"] for b in check["budgets"]}
    assert spent[tenant_budget.pk] == spent[agent_budget.pk] == str(total / 10**9)
    # The agent's budget is over its cap: its next call is refused.
    assert check["allowed"] is False and f"budget {agent_budget.pk}" in check["detail"]


def test_a_sessions_spend_counts_toward_its_users_budget(acme, settings):
    """Claude Code names its user on every record (user.id, an installation id): the
    folded session's calls count toward that user's budget, and another user's is left
    alone."""
    user = fixture(CLAUDE_CODE)["standard"]["user.id"]
    with tenant_scope(acme):
        users_budget = Budget.objects.create(
            tenant=acme, scope="user", user=user, period="day", cap_nusd=10**9
        )
        other = Budget.objects.create(
            tenant=acme, scope="user", user="someone-else", period="day", cap_nusd=10**9
        )
    with cost_queue(settings) as drain:
        assert ingest(acme, otlp_json(fixture(CLAUDE_CODE), start_ns=START)).accepted == 10
        drain()
    with tenant_scope(acme):
        total = sum(c.cost_nusd for c in SpanCost.objects.all())
        by_user = dict(
            UsageDaily.objects.values("user_id")
            .annotate(c=Sum("cost_nusd"))
            .values_list("user_id", "c")
        )
    assert total > 0 and by_user == {user: total}
    day = datetime.fromtimestamp(START / 1e9, tz=UTC).date()
    windows = {w.budget_id: w for w in windows_for(tenant_id=acme.id, agent="", run_id=None,
                                                   day=day, user=user)}  # fmt: skip
    assert set(windows) == {users_budget.pk}
    with tenant_scope(acme):
        spent = dict(BudgetWindow.objects.values_list("budget_id", "spent_nusd"))
    assert spent == {users_budget.pk: total} and other.pk not in spent


def test_the_alert_detectors_see_their_errors(acme, settings):
    settings.ALERTS_DETECT_ON_INGEST = False  # detection runs below, in this process
    settings.ALERTS_ERROR_MIN_CALLS = 4
    AlertRule.all_tenants.create(tenant=acme, detector="error_burst", threshold=0.5)
    doc = otlp_json(fixture(CLAUDE_CODE), start_ns=START, only=[0, 7])
    records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    error = records[1]
    for attempt in range(2, 6):  # the API overloaded: retried, failing each time
        again = json.loads(json.dumps(error))
        again["timeUnixNano"] = str(int(error["timeUnixNano"]) + attempt * 10**9)
        for a in again["attributes"]:
            if a["key"] == "event.sequence":
                a["value"] = {"intValue": str(100 + attempt)}
        records.append(again)
    with announced() as seen, TestCase.captureOnCommitCallbacks(execute=True):
        assert ingest(acme, doc).accepted == 6
    for tenant_id, batch in seen:
        detect_spans(tenant_id=tenant_id, spans=batch)
    with tenant_scope(acme):
        causes = set(Alert.objects.values_list("cause", flat=True))
    assert causes == {"error_burst:agent:claude-code"}


def test_a_sessions_spend_counts_toward_the_tenants_and_its_users_budgets_at_once(acme, settings):
    """What `budgets/check?user=` answers for the session's user: the tenant's budget
    and that user's, each spent by the whole session."""
    user = fixture(CLAUDE_CODE)["standard"]["user.id"]
    with tenant_scope(acme):
        tenant_budget = Budget.objects.create(
            tenant=acme, scope="tenant", period="lifetime", cap_nusd=10**9
        )
        users_budget = Budget.objects.create(
            tenant=acme, scope="user", user=user, period="lifetime", cap_nusd=10**9
        )
    with cost_queue(settings) as drain:
        assert ingest(acme, otlp_json(fixture(CLAUDE_CODE), start_ns=START)).accepted == 10
        drain()
    with tenant_scope(acme):
        total = sum(c.cost_nusd for c in SpanCost.objects.all())
    check = budget_check(tenant_id=acme.id, agent="claude-code", user=user)
    spent = {b["id"]: b["spent_usd"] for b in check["budgets"]}
    assert total > 0 and spent == {
        tenant_budget.pk: str(total / 10**9),
        users_budget.pk: str(total / 10**9),
    }
    stranger = budget_check(tenant_id=acme.id, agent="claude-code", user="someone-else")
    assert {b["id"] for b in stranger["budgets"]} == {tenant_budget.pk}


def _tool_result(record: dict, *, at_ms: int, parameters: str | None, sequence: int) -> dict:
    """A copy of a tool_result record, later, with its parameters (Claude Code sends
    `tool_parameters` when OTEL_LOG_TOOL_DETAILS=1) or without them (its default)."""
    again = json.loads(json.dumps(record))
    again["timeUnixNano"] = str(START + at_ms * 1_000_000)
    again["attributes"] = [
        a for a in again["attributes"] if a["key"] not in ("event.sequence", "tool_use_id")
    ] + [
        {"key": "event.sequence", "value": {"intValue": str(sequence)}},
        {"key": "tool_use_id", "value": {"stringValue": f"toolu_{sequence}"}},
    ]
    if parameters is not None:
        again["attributes"].append({"key": "tool_parameters", "value": {"stringValue": parameters}})
    return again


def _detect(acme, doc) -> set[str]:
    with announced() as seen, TestCase.captureOnCommitCallbacks(execute=True):
        assert ingest(acme, doc).accepted == len(
            doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        )
    for tenant_id, batch in seen:
        detect_spans(tenant_id=tenant_id, spans=batch)
    with tenant_scope(acme):
        return set(Alert.objects.values_list("summary", flat=True))


def test_the_loop_detector_sees_a_session_running_one_command_again_and_again(acme, settings):
    settings.ALERTS_DETECT_ON_INGEST = False  # detection runs below, in this process
    AlertRule.all_tenants.create(tenant=acme, detector="loop")
    doc = otlp_json(fixture(CLAUDE_CODE), start_ns=START, only=[0, 1])  # prompt p-1
    records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    read = otlp_json(fixture(CLAUDE_CODE), start_ns=START, only=[3])
    read = read["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    params = json.dumps({"file_path": "/repo/billing/tests/test_costs.py"})
    records += [
        _tool_result(read, at_ms=5000 + i * 100, parameters=params, sequence=200 + i)
        for i in range(3)
    ]
    assert _detect(acme, doc) == {"Read called 3 times with the same arguments"}


def test_tool_calls_whose_arguments_were_not_sent_are_not_a_loop(acme, settings):
    """Claude Code leaves tool parameters out by default: three Reads of one prompt
    may read three files, so calls without their arguments are not compared."""
    settings.ALERTS_DETECT_ON_INGEST = False
    AlertRule.all_tenants.create(tenant=acme, detector="loop")
    doc = otlp_json(fixture(CLAUDE_CODE), start_ns=START, only=[0, 1])
    read = otlp_json(fixture(CLAUDE_CODE), start_ns=START, only=[3])
    read = read["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"] += [
        _tool_result(read, at_ms=5000 + i * 100, parameters=None, sequence=300 + i)
        for i in range(4)
    ]
    assert _detect(acme, doc) == set()
