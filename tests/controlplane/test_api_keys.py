import time

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane import services
from controlplane.models import ApiKey, AuditEvent
from controlplane.tenancy import tenant_scope

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_401_without_a_key(api):
    resp = api.get("/api/v1/tenant")
    assert resp.status_code == 401
    assert resp.json()["error"] == "not_authenticated"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer fd_nope", "Bearer nope", "Basic abc", "Bearer"])
def test_it_answers_401_for_an_unknown_or_malformed_key(api, acme, header):
    resp = api.get("/api/v1/tenant", headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.json()["detail"]


def test_it_answers_401_for_a_revoked_key(api, acme, make_key):
    raw = make_key(acme, "read")
    assert api.get("/api/v1/tenant", key=raw).status_code == 200
    services.api_key_revoke(key=ApiKey.all_tenants.get(tenant=acme))
    resp = api.get("/api/v1/tenant", key=raw)
    assert resp.status_code == 401
    assert resp.json() == {"error": "authentication_failed", "detail": "unknown or revoked API key"}


def test_it_reads_a_key_once_per_cache_period(api, acme, make_key, django_assert_num_queries):
    raw = make_key(acme, "read")
    assert api.get("/api/v1/tenant", key=raw).status_code == 200
    with django_assert_num_queries(0):
        assert services.api_key_authenticate(raw_key=raw).tenant == acme


def test_it_refuses_a_key_revoked_elsewhere_within_the_cache_period(
    api, acme, make_key, monkeypatch
):
    raw = make_key(acme, "read")
    assert api.get("/api/v1/tenant", key=raw).status_code == 200
    # Another process revokes it: this one's entry is not forgotten, only outlived.
    ApiKey.all_tenants.filter(tenant=acme).update(revoked_at=timezone.now())
    assert api.get("/api/v1/tenant", key=raw).status_code == 200
    later = time.monotonic() + settings.API_KEY_CACHE_SECONDS
    monkeypatch.setattr(services._active_keys, "clock", lambda: later)
    assert api.get("/api/v1/tenant", key=raw).status_code == 401


def test_it_returns_the_callers_tenant_and_records_use(api, acme, globex, make_key):
    raw = make_key(acme, "ingest")
    body = api.get("/api/v1/tenant", key=raw).json()
    assert body["slug"] == "acme" and body["scopes"] == ["ingest"]
    assert ApiKey.all_tenants.get(tenant=acme).last_used_at is not None
    assert api.get("/api/v1/tenant", key=make_key(globex, "read")).json()["slug"] == "globex"


def test_it_answers_403_for_the_wrong_scope(api, acme, make_key):
    resp = api.get("/api/v1/api-keys", key=make_key(acme, "read", "ingest", "write"))
    assert resp.status_code == 403
    assert resp.json() == {"error": "permission_denied", "detail": "this needs the 'admin' scope"}


def test_it_creates_lists_and_revokes_keys(api, acme, make_key):
    admin = make_key(acme, "admin")
    created = api.post(
        "/api/v1/api-keys", key=admin, json={"name": "exporter", "scopes": ["ingest"]}
    )
    assert created.status_code == 201
    new = created.json()
    assert new["key"].startswith(new["prefix"])
    assert api.get("/api/v1/tenant", key=new["key"]).status_code == 200

    listed = api.get("/api/v1/api-keys", key=admin).json()
    assert {k["name"] for k in listed} == {"test", "exporter"}
    assert all("key" not in k and "key_hash" not in k for k in listed)

    revoked = api.post(f"/api/v1/api-keys/{new['id']}/revoke", key=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert api.get("/api/v1/tenant", key=new["key"]).status_code == 401

    actions = [e["action"] for e in api.get("/api/v1/audit", key=admin).json()]
    assert actions[:2] == ["api_key.revoke", "api_key.create"]
    with tenant_scope(acme):
        event = AuditEvent.objects.filter(action="api_key.revoke").get()
    assert event.actor_api_key.prefix == admin[:10]


def test_it_names_bad_fields(api, acme, make_key):
    resp = api.post(
        "/api/v1/api-keys", key=make_key(acme, "admin"), json={"name": "x", "scopes": ["root"]}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid"
    assert "scopes" in resp.json()["detail"]


def test_it_hides_another_tenants_key(api, acme, globex, make_key):
    make_key(globex, "read")
    other = ApiKey.all_tenants.get(tenant=globex)
    resp = api.post(f"/api/v1/api-keys/{other.id}/revoke", key=make_key(acme, "admin"))
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"
    other.refresh_from_db()
    assert other.revoked_at is None


def test_it_uses_the_members_role_for_a_session(client, acme, acme_viewer):
    client.force_login(acme_viewer)
    assert client.get("/api/v1/tenant").json()["scopes"] == ["read"]
    assert client.get("/api/v1/api-keys").status_code == 403
    client.force_login(acme.owner)
    assert client.get("/api/v1/api-keys").status_code == 200


def test_it_answers_json_404_for_unknown_api_paths(api):
    resp = api.get("/api/v1/nope")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"
