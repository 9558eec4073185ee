import re

import pytest

from controlplane.models import ApiKey, AuditEvent
from tests.factories import UserFactory


@pytest.fixture
def staff_client(client):
    client.force_login(
        UserFactory(username="ops@flightdeck.test", is_staff=True, is_superuser=True)
    )
    return client


@pytest.mark.django_db
def test_it_shows_a_new_key_once_in_the_admin_and_revokes_it(staff_client, acme):
    resp = staff_client.post(
        "/admin/controlplane/apikey/add/",
        {"tenant": acme.id, "name": "from admin", "scopes": ["ingest", "read"]},
        follow=True,
    )
    assert resp.status_code == 200
    shown = re.search(r"not be shown again: (fd_[\w-]+)", resp.content.decode())
    assert shown
    key = ApiKey.all_tenants.get(name="from admin")
    assert key.scopes == ["ingest", "read"] and shown.group(1).startswith(key.prefix)
    page = staff_client.get(f"/admin/controlplane/apikey/{key.id}/change/").content.decode()
    assert shown.group(1) not in page

    staff_client.post(
        "/admin/controlplane/apikey/",
        {"action": "revoke", "_selected_action": [key.id]},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.all_tenants.filter(action="api_key.revoke", target_id=str(key.id)).exists()
    assert staff_client.get("/admin/controlplane/auditevent/").status_code == 200


@pytest.mark.django_db
def test_it_serves_the_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/health", "/api/v1/tenant", "/api/v1/api-keys"} <= set(schema["paths"])
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


@pytest.mark.django_db
def test_it_changes_redaction_rules_through_the_service(staff_client, acme):
    from tracing.models import RedactionPolicy

    resp = staff_client.post(
        "/admin/tracing/redactionpolicy/add/",
        {
            "tenant": acme.id,
            "custom_patterns": '[{"name": "ticket", "pattern": "TCK-\\\\d+"}]',
            "drop_keys": '["secret"]',
            "never_scan_keys": "[]",
        },
        follow=True,
    )
    assert resp.status_code == 200
    policy = RedactionPolicy.all_tenants.get(tenant=acme)
    assert policy.custom_patterns == [{"name": "TICKET", "pattern": "TCK-\\d+"}]
    assert policy.version == 1
    assert AuditEvent.all_tenants.filter(action="redaction_policy.update").exists()
    assert staff_client.get("/admin/tracing/trace/").status_code == 200
