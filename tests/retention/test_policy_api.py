"""GET/PUT /api/v1/retention, legal holds and erasure requests over real HTTP."""

import pytest

from controlplane.models import AuditEvent
from tracing.retention.models import LegalHold

POLICY = {
    "hot_days": 3,
    "warm_days": 10,
    "cold_days": 30,
    "extended_days": 400,
    "agents": {"support": {"hot_days": 1, "cold_days": 5}},
}


@pytest.mark.django_db(transaction=True)
def test_it_gives_the_plan_defaults_then_the_tenants_own(api, acme, make_key):
    key = make_key(acme, "admin")
    first = api.get("/api/v1/retention", key=key)
    assert first.status_code == 200
    assert set(first.json()) == {"hot_days", "warm_days", "cold_days", "extended_days", "agents"}
    assert first.json()["hot_days"] == 7  # the standard plan's
    put = api.request("PUT", "/api/v1/retention", key=key, json=POLICY)
    assert put.status_code == 200, put.text
    assert put.json() == POLICY
    assert api.get("/api/v1/retention", key=key).json() == POLICY
    event = AuditEvent.all_tenants.get(tenant=acme, action="retention.update")
    assert event.data["after"]["warm_days"] == 10


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**POLICY, "hot_days": -1}, "hot_days"),
        ({**POLICY, "warm_days": "ten"}, "warm_days"),
        ({**POLICY, "cold_days": True}, "cold_days"),
        ({k: v for k, v in POLICY.items() if k != "extended_days"}, "extended_days"),
        ({**POLICY, "agents": {"support": {"hot_days": 1.5}}}, "agents.support.hot_days"),
        ({**POLICY, "agents": {"support": {"forever": 1}}}, "agents.support.forever"),
        ({**POLICY, "agents": []}, "agents"),
        ({**POLICY, "colder_days": 3}, "colder_days"),
    ],
)
def test_it_refuses_bad_days_naming_the_field(api, acme, make_key, body, field):
    response = api.request("PUT", "/api/v1/retention", key=make_key(acme, "admin"), json=body)
    assert response.status_code == 400
    assert field in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_it_needs_admin(api, acme, make_key):
    key = make_key(acme, "read", "write")
    assert api.get("/api/v1/retention", key=key).status_code == 403
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_it_holds_and_releases_with_another_tenants_hold_a_404(api, acme, globex, make_key):
    key = make_key(acme, "admin")
    made = api.post(
        "/api/v1/legal-holds",
        key=key,
        json={"scope": "session", "value": "s-1", "reason": "case 7"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["scope"] == "session"
    bad = api.post("/api/v1/legal-holds", key=key, json={"scope": "trace", "value": "nope"})
    assert bad.status_code == 400 and "value" in bad.text
    theirs = LegalHold.all_tenants.create(tenant=globex, scope="tenant")
    assert api.delete(f"/api/v1/legal-holds/{theirs.pk}", key=key).status_code == 404
    assert api.delete(f"/api/v1/legal-holds/{made.json()['id']}", key=key).status_code == 204
    assert not LegalHold.all_tenants.filter(tenant=acme).exists()
    assert LegalHold.all_tenants.filter(tenant=globex).exists()


@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_erasure_request_naming_neither_or_both(api, acme, make_key):
    key = make_key(acme, "admin")
    for body in ({}, {"session_id": "a", "user_id": "b"}):
        response = api.post("/api/v1/erasure-requests", key=key, json=body)
        assert response.status_code == 400
        assert "session_id" in response.text
    assert api.get("/api/v1/erasure-requests/999999", key=key).status_code == 404
