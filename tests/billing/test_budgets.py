import pytest

from billing.models import Budget
from billing.signals import budget_threshold_crossed
from controlplane.models import AuditEvent
from controlplane.tenancy import tenant_scope
from tests.billing.helpers import chat_attrs, cost_queue, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def crossings():
    seen = []

    def listen(sender, **kwargs):
        seen.append((kwargs["budget_id"], kwargs["window"], kwargs["threshold"]))

    budget_threshold_crossed.connect(listen, dispatch_uid="test-crossings")
    yield seen
    budget_threshold_crossed.disconnect(dispatch_uid="test-crossings")


def test_it_creates_shows_changes_and_deletes_budgets_audited(api, acme, make_key):
    admin = make_key(acme, "admin", "read")
    resp = api.post(
        "/api/v1/budgets",
        key=admin,
        json={"scope": "agent", "agent": "support", "period": "day", "cap_usd": "12.50"},
    )
    assert resp.status_code == 201, resp.text
    budget = resp.json()
    assert budget["cap_usd"] == "12.5" and budget["thresholds"] == [0.5, 0.8, 1.0]
    assert (budget["spent_usd"], budget["reserved_usd"], budget["remaining_usd"]) == (
        "0",
        "0",
        "12.5",
    )
    path = f"/api/v1/budgets/{budget['id']}"
    changed = api.request("PUT", path, key=admin, json={"cap_usd": 20, "thresholds": [0.9]}).json()
    assert changed["cap_usd"] == "20" and changed["thresholds"] == [0.9]
    assert [b["id"] for b in api.get("/api/v1/budgets", key=admin).json()] == [budget["id"]]
    assert api.delete(path, key=admin).status_code == 204
    assert api.get(path, key=admin).status_code == 404
    with tenant_scope(acme):
        actions = list(
            AuditEvent.objects.filter(action__startswith="budget.")
            .values_list("action", flat=True)
            .order_by("pk")
        )
    assert actions == ["budget.create", "budget.update", "budget.delete"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "planet", "cap_usd": 1}, "scope"),
        ({"scope": "tenant", "cap_usd": "lots"}, "cap_usd"),
        ({"scope": "tenant", "cap_usd": 0}, "cap_usd"),
        ({"scope": "tenant"}, "cap_usd"),
        ({"scope": "agent", "cap_usd": 1}, "agent"),
        ({"scope": "tenant", "cap_usd": 1, "period": "week"}, "period"),
        ({"scope": "tenant", "cap_usd": 1, "thresholds": [0.5, 2]}, "thresholds[1]"),
        ({"scope": "tenant", "cap_usd": 1, "colour": "red"}, "colour"),
    ],
)
def test_a_bad_budget_is_a_400_naming_the_field(api, acme, make_key, body, field):
    resp = api.post("/api/v1/budgets", key=make_key(acme, "admin"), json=body)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid" and field in resp.json()["detail"], resp.json()


def test_another_tenants_budget_is_a_404_and_writes_need_admin(api, acme, globex, make_key):
    with tenant_scope(globex):
        theirs = Budget.objects.create(tenant=globex, scope="tenant", cap_nusd=10**9)
    admin, writer = make_key(acme, "admin", "read"), make_key(acme, "write", "read")
    path = f"/api/v1/budgets/{theirs.pk}"
    assert api.get(path, key=admin).status_code == 404
    assert api.request("PUT", path, key=admin, json={"cap_usd": 1}).status_code == 404
    assert api.delete(path, key=admin).status_code == 404
    assert api.get("/api/v1/budgets", key=admin).json() == []
    resp = api.post("/api/v1/budgets", key=writer, json={"scope": "tenant", "cap_usd": 1})
    assert resp.status_code == 403


def _call_spans():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.tracing.otlp import provider_for

    exporter = InMemorySpanExporter()
    with (
        provider_for(exporter)
        .get_tracer("t")
        .start_as_current_span("chat", attributes=chat_attrs())
    ):
        pass
    return exporter.get_finished_spans()


def test_external_spend_fires_each_threshold_once_also_when_a_batch_is_resent(
    transactional_db, acme, settings, crossings
):
    from billing import costs
    from billing.models import SpanCost
    from billing.selectors import budget_check

    with tenant_scope(acme):
        # $0.001764 a call (253/67 tokens of claude-sonnet-4) against a $0.01 cap.
        budget = Budget.objects.create(
            tenant=acme,
            scope="agent",
            agent="support",
            period="month",
            cap_nusd=10_000_000,
            thresholds=[0.5, 0.8, 1.0],
        )
    batches = [_call_spans() for _ in range(6)]
    with cost_queue(settings) as drain:
        for batch in batches[:3]:
            send(acme, batch)
        drain()
        assert [c[2] for c in crossings] == [0.5]
        for batch in batches[3:]:
            send(acme, batch)
        drain()
        assert [c[2] for c in crossings] == [0.5, 0.8, 1.0]
        # The exporter resends every batch, and a costing task is redelivered.
        for batch in batches:
            assert send(acme, batch).duplicates == 1
        assert drain() == 0
        pairs = [
            (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for b in batches for s in b
        ]
        assert costs.spans_cost(tenant_id=acme.id, spans=pairs) == 0
    assert [c[2] for c in crossings] == [0.5, 0.8, 1.0]
    assert {c[0] for c in crossings} == {budget.pk}
    check = budget_check(tenant_id=acme.id, agent="support")
    assert check["allowed"] is False and f"budget {budget.pk}" in check["detail"]
    assert check["budgets"][0]["spent_usd"] == "0.010584"
    with tenant_scope(acme):
        # The sixth call was recorded with the budget past its cap: flagged.
        assert SpanCost.objects.filter(over_budget=True).count() == 1


def test_the_budget_check_answers_for_an_external_agent(api, acme, make_key):
    key = make_key(acme, "read")
    body = api.get("/api/v1/budgets/check?agent=support", key=key).json()
    assert body == {"agent": "support", "user": "", "allowed": True, "detail": "", "budgets": []}
    resp = api.get("/api/v1/budgets/check", key=key)
    assert resp.status_code == 400 and "agent" in resp.json()["detail"]
