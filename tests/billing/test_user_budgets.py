"""Per-user budgets: a span's user (its own user.id or enduser.id, else its trace's)
counts its calls toward that user's budgets as well as the tenant's and the agent's;
usage reads by user; the budget check answers for a user."""

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from billing.models import Budget, UsageDaily
from billing.selectors import budget_check
from billing.signals import budget_threshold_crossed
from controlplane.tenancy import tenant_scope
from tests.billing.helpers import chat_attrs, cost_queue, send
from tests.tracing.otlp import provider_for

pytestmark = pytest.mark.django_db
CALL_NUSD = 1_764_000  # 253/67 tokens of claude-sonnet-4


@pytest.fixture
def crossings():
    seen = []

    def listen(sender, **kwargs):
        seen.append(kwargs)

    budget_threshold_crossed.connect(listen, dispatch_uid="test-user-crossings")
    yield seen
    budget_threshold_crossed.disconnect(dispatch_uid="test-user-crossings")


def _user_budget(tenant, user, cap_nusd, **extra):
    with tenant_scope(tenant):
        return Budget.objects.create(
            tenant=tenant, scope="user", user=user, period="month", cap_nusd=cap_nusd, **extra
        )


def _calls(user_attrs: dict, n: int = 1, *, on_root: bool = False):
    """n chat spans acting for a user: the user on each call, or only on its root."""
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter).get_tracer("t")
    for _ in range(n):
        root = user_attrs if on_root else {}
        with tracer.start_as_current_span("invoke_agent support", attributes=root):
            calls = {} if on_root else user_attrs
            with tracer.start_as_current_span("chat", attributes={**chat_attrs(), **calls}):
                pass
    return exporter.get_finished_spans()


def test_it_creates_user_budgets_and_refuses_bad_ones(api, acme, make_key):
    admin = make_key(acme, "admin", "read")
    resp = api.post(
        "/api/v1/budgets", key=admin, json={"scope": "user", "user": "u-42", "cap_usd": "5"}
    )
    assert resp.status_code == 201, resp.text
    assert (resp.json()["scope"], resp.json()["user"], resp.json()["agent"]) == ("user", "u-42", "")
    path = f"/api/v1/budgets/{resp.json()['id']}"
    assert api.get(path, key=admin).json()["user"] == "u-42"
    changed = api.request("PUT", path, key=admin, json={"user": "u-43"}).json()
    assert changed["user"] == "u-43"
    for body, field in [
        ({"scope": "user", "cap_usd": 1}, "user"),
        ({"scope": "user", "user": " ", "cap_usd": 1}, "user"),
        ({"scope": "user", "user": "u", "agent": "support", "cap_usd": 1}, "agent"),
        ({"scope": "tenant", "user": "u", "cap_usd": 1}, "user"),
        ({"scope": "user", "user": 7, "cap_usd": 1}, "user"),
        ({"scope": "user", "user": "u" * 256, "cap_usd": 1}, "user"),
    ]:
        bad = api.post("/api/v1/budgets", key=admin, json=body)
        assert bad.status_code == 400 and field in bad.json()["detail"], (body, bad.json())


def test_a_budget_for_an_email_holds_the_email_as_spans_store_it(api, acme, make_key):
    """The span path redacts e-mail addresses to a keyed placeholder; a budget named by
    the address is kept as that placeholder, so it matches and never stores it."""
    admin = make_key(acme, "admin", "read")
    body = {"scope": "user", "user": "dev@acme.example", "cap_usd": "5"}
    created = api.post("/api/v1/budgets", key=admin, json=body).json()
    assert created["user"].startswith("[EMAIL:") and "acme.example" not in created["user"]
    check = api.get("/api/v1/budgets/check?user=dev@acme.example", key=admin).json()
    assert [b["id"] for b in check["budgets"]] == [created["id"]]
    assert check["user"] == created["user"]


def test_a_users_spend_counts_toward_their_budget_and_the_tenants_only(
    transactional_db, acme, settings, crossings
):
    with tenant_scope(acme):
        tenant_budget = Budget.objects.create(
            tenant=acme, scope="tenant", period="month", cap_nusd=10**12
        )
    alices = _user_budget(acme, "alice", 3 * CALL_NUSD, thresholds=[0.5, 1.0])
    bobs = _user_budget(acme, "bob", 10**12)
    with cost_queue(settings) as drain:
        send(acme, _calls({"user.id": "alice"}, 2))
        send(acme, _calls({"enduser.id": "alice"}, 1))
        send(acme, _calls({"user.id": "carol"}, 1))
        send(acme, _calls({}, 1))
        drain()
    check = budget_check(tenant_id=acme.id, agent="support", user="alice")
    spent = {b["id"]: b["spent_usd"] for b in check["budgets"]}
    assert spent == {tenant_budget.pk: "0.00882", alices.pk: "0.005292"}
    assert check["allowed"] is False and f"budget {alices.pk}" in check["detail"]
    assert budget_check(tenant_id=acme.id, agent="", user="bob")["budgets"][1]["spent_usd"] == "0"
    assert budget_check(tenant_id=acme.id, agent="", user="bob")["allowed"] is True
    events = [c for c in crossings if c["budget_id"] == alices.pk]
    assert [(e["threshold"], e["scope"], e["user"]) for e in events] == [
        (0.5, "user", "alice"),
        (1.0, "user", "alice"),
    ]
    assert not [c for c in crossings if c["budget_id"] == bobs.pk]
    with tenant_scope(acme):
        by_user = dict(UsageDaily.objects.values_list("user_id", "calls"))
    assert by_user == {"alice": 3, "carol": 1, "": 1}


def test_a_call_without_a_user_of_its_own_counts_toward_its_traces_user(
    transactional_db, acme, settings
):
    alices = _user_budget(acme, "alice", 10**12)
    with cost_queue(settings) as drain:
        send(acme, _calls({"user.id": "alice"}, 2, on_root=True))
        drain()
    check = budget_check(tenant_id=acme.id, agent="", user="alice")
    assert [(b["id"], b["spent_usd"]) for b in check["budgets"]] == [(alices.pk, "0.003528")]


def test_usage_groups_by_user(api, acme, make_key, settings, transactional_db):
    with cost_queue(settings) as drain:
        send(acme, _calls({"user.id": "alice"}, 2))
        send(acme, _calls({"user.id": "dev@acme.example"}, 1))
        drain()
    key = make_key(acme, "read")
    body = api.get("/api/v1/usage?group_by=user", key=key).json()
    users = {i["user"]: (i["calls"], i["cost_usd"]) for i in body["items"]}
    assert users.pop("alice") == (2, "0.003528")
    ((redacted, figures),) = users.items()
    assert redacted.startswith("[EMAIL:") and figures == (1, "0.001764")
    resp = api.get("/api/v1/usage?group_by=user,agent", key=key)
    assert resp.status_code == 200 and resp.json()["items"][0]["agent"] == "support"
    assert api.get("/api/v1/usage?group_by=person", key=key).status_code == 400


def test_the_budget_check_needs_an_agent_or_a_user(api, acme, make_key):
    key = make_key(acme, "read")
    assert api.get("/api/v1/budgets/check", key=key).status_code == 400
    body = api.get("/api/v1/budgets/check?user=alice", key=key).json()
    assert (body["user"], body["allowed"]) == ("alice", True)
    assert api.get(f"/api/v1/budgets/check?user={'u' * 300}", key=key).status_code == 400


def test_admins_add_a_user_budget_on_the_budgets_page(client, acme):
    client.force_login(acme.owner)
    assert 'name="user"' in client.get("/t/acme/settings/budgets/").content.decode()
    resp = client.post(
        "/t/acme/settings/budgets/",
        {"scope": "user", "user": "alice", "period": "day", "cap_usd": "2", "thresholds": "1"},
        follow=True,
    )
    assert "holds from now on" in resp.content.decode()
    with tenant_scope(acme):
        added = Budget.objects.get(scope="user")
    assert (added.user, added.period, added.cap_nusd) == ("alice", "day", 2_000_000_000)
    assert '<span class="mono">alice</span>' in resp.content.decode()
    bad = client.post("/t/acme/settings/budgets/", {"scope": "user", "cap_usd": "2"})
    assert bad.status_code == 400
