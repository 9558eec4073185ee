from datetime import timedelta

import pytest
from django.test import TestCase
from django.utils import timezone

from alerts.models import Alert
from alerts.tasks import budget_crossed, stuck_runs
from billing.costs import spans_cost
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services as execution_services
from execution.models import Run, RunStatus
from replay.models import JournalStep
from tests.alerts.helpers import announced
from tests.billing.conftest import price_book  # noqa: F401 - costs need the price book
from tests.billing.helpers import chat_attrs, one_call
from tests.execution.bundles import agent_with_bundle

pytestmark = pytest.mark.django_db


def queued_run(tenant, name="looper"):
    agent = agent_with_bundle(tenant, name=name, code="def main(ctx, input):\n    return 1\n")
    with tenant_scope(tenant):
        return execution_services.run_create(
            tenant=tenant, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )


def event(**fields):
    return {
        "budget_id": 7, "scope": "agent", "agent": "looper", "run_id": None, "period": "month",
        "window": "2026-12", "threshold": 0.8, "cap_usd": "10.00", "spent_usd": "8.10", **fields,
    }  # fmt: skip


def test_it_raises_a_budget_threshold_once_and_stops_the_run(acme, rule):
    run = queued_run(acme)
    rule("budget", stop_run=True)
    budget_crossed(tenant_id=acme.id, event=event(run_id=run.pk))
    budget_crossed(tenant_id=acme.id, event=event(run_id=run.pk))  # a redelivery
    (alert,) = Alert.all_tenants.filter(tenant=acme)
    assert "reached 80% of its cap" in alert.summary and alert.run_id == str(run.pk)
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, "budget")


def test_it_keeps_a_budget_rule_to_its_threshold(acme, rule):
    rule("budget", threshold=1.0)
    budget_crossed(tenant_id=acme.id, event=event(threshold=0.8))
    assert not Alert.all_tenants.exists()
    budget_crossed(tenant_id=acme.id, event=event(threshold=1.0))
    assert Alert.all_tenants.count() == 1


def test_it_asks_a_running_run_to_stop_at_its_next_gateway_call(acme):
    run = queued_run(acme)
    Run.all_tenants.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    from execution.selectors import run_stop_wanted

    with tenant_scope(acme):
        assert execution_services.run_stop_request(run_id=run.pk, reason="loop")
        assert run_stop_wanted(run_id=run.pk) == "loop"


def test_it_raises_a_run_with_no_step_for_longer_than_the_limit(acme, rule):
    rule("stuck_run", threshold=60)
    stuck, busy = queued_run(acme), queued_run(acme, name="busy")
    long_ago = timezone.now() - timedelta(minutes=10)
    Run.all_tenants.filter(pk__in=[stuck.pk, busy.pk]).update(
        status=RunStatus.RUNNING, started_at=long_ago
    )
    JournalStep.all_tenants.create(
        tenant=acme, run=busy, step=1, kind="tool", request_hash="x", created_at=timezone.now()
    )
    stuck_runs()
    stuck_runs()
    (alert,) = Alert.all_tenants.filter(tenant=acme)
    assert alert.run_id == str(stuck.pk) and "no step for" in alert.summary


def test_it_raises_a_trace_costing_far_more_than_the_agents_median(acme, rule):
    from alerts.tasks import detect_spans

    rule("cost_spike", threshold=5)
    seen_batches = []
    for tokens in [(1000, 100)] * 5 + [(50_000, 5_000), (1200, 100)]:
        with announced() as seen, TestCase.captureOnCommitCallbacks(execute=True):
            trace = one_call(acme, attrs=chat_attrs(tokens=tokens, agent="support"))
        seen_batches.append((trace, seen[0][1]))
    for _, spans in seen_batches:
        spans_cost(tenant_id=acme.id, spans=[tuple(s) for s in spans])
        detect_spans(tenant_id=acme.id, spans=spans)
    (alert,) = Alert.all_tenants.filter(tenant=acme)
    assert alert.trace_id == seen_batches[5][0] and alert.detector == "cost_spike"


def test_it_raises_a_cap_refusing_calls_once_although_the_budget_lists_no_such_threshold(
    transactional_db, acme, rule
):
    from billing.models import Budget
    from billing.signals import budget_threshold_crossed
    from tests.billing.test_cap_reached import _refuse

    rule("budget", threshold=1.0)  # only the cap
    with tenant_scope(acme):
        budget = Budget.objects.create(
            tenant=acme, scope="agent", agent="support", period="month", cap_nusd=100_000,
            thresholds=[0.5],
        )  # fmt: skip
    events = []
    budget_threshold_crossed.connect(lambda sender, **e: events.append(e), weak=False,
                                     dispatch_uid="test-alert-cap")  # fmt: skip
    try:
        assert _refuse(acme) and _refuse(acme)
    finally:
        budget_threshold_crossed.disconnect(dispatch_uid="test-alert-cap")
    (announced_cap,) = events
    announced_cap.pop("signal", None)
    for _ in range(2):  # the task redelivered
        budget_crossed(tenant_id=acme.id, event=announced_cap)
    (alert,) = Alert.all_tenants.filter(tenant=acme)
    assert alert.detector == "budget" and alert.agent == "support"
    assert f"budget {budget.pk} reached its cap: a call was refused" in alert.summary


def _costed_call(tenant, session, tokens=(1000, 100)):
    """One chat call of agent support in the session, costed, and its announced batch."""
    with announced() as seen, TestCase.captureOnCommitCallbacks(execute=True):
        trace = one_call(
            tenant,
            attrs=chat_attrs(tokens=tokens, agent="support", **{"gen_ai.conversation.id": session}),
        )
    spans = seen[0][1]
    spans_cost(tenant_id=tenant.id, spans=[tuple(s) for s in spans])
    return trace, spans


def test_it_raises_a_session_costing_far_more_than_the_agents_median_session_once(acme, rule):
    from alerts.tasks import detect_spans

    rule("cost_spike", threshold=5)
    for i in range(5):  # the agent's recent sessions: one call each
        detect_spans(tenant_id=acme.id, spans=_costed_call(acme, f"usual-{i}")[1])
    # Each of the long session's calls costs what a usual one does: no trace is a spike,
    # and the session stays under 5x its agent's median until its fifth call.
    batches = []
    for n in range(1, 8):
        batches.append(_costed_call(acme, "long"))
        detect_spans(tenant_id=acme.id, spans=batches[-1][1])
        assert Alert.all_tenants.filter(tenant=acme).count() == (n >= 5)
    detect_spans(tenant_id=acme.id, spans=batches[4][1])  # a redelivered task
    (alert,) = Alert.all_tenants.filter(tenant=acme)
    assert alert.detector == "cost_spike" and alert.cause == "cost_spike:session:long"
    assert "session long cost" in alert.summary and "5.0x support's median session" in alert.summary
    assert alert.detail["session_id"] == "long"
    assert (alert.trace_id, alert.span_id) == (batches[4][0], batches[4][1][0][1])


def test_it_leaves_a_session_under_the_multiple_or_without_enough_sessions_alone(acme, rule):
    from alerts.tasks import detect_spans

    rule("cost_spike", threshold=5)
    for _ in range(9):  # no other session of the agent to compare with
        detect_spans(tenant_id=acme.id, spans=_costed_call(acme, "first")[1])
    for i in range(4):  # four others: fewer than ALERTS_COST_MIN_SAMPLES
        detect_spans(tenant_id=acme.id, spans=_costed_call(acme, f"usual-{i}")[1])
    for _ in range(4):  # five others now, median one call: 4x stays under 5x
        detect_spans(tenant_id=acme.id, spans=_costed_call(acme, "under")[1])
    assert not Alert.all_tenants.exists()
