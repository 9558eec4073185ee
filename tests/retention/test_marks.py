"""PUT/DELETE /api/v1/traces/{id}/mark over real HTTP, and the trace page's control:
a marked trace is kept at least the policy's extended_days."""

import pytest

from controlplane.models import AuditEvent
from tests.retention.helpers import POLICY, send_trace
from tracing.retention.models import TraceMark

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_marks_and_unmarks_a_trace_audited(api, acme, make_key):
    key = make_key(acme, "read", "write")
    admin = make_key(acme, "admin")
    assert api.request("PUT", "/api/v1/retention", key=admin, json=POLICY).status_code == 200
    trace = send_trace(acme)
    assert api.get(f"/api/v1/traces/{trace}", key=key).json()["trace"]["marked"] is False

    put = api.request("PUT", f"/api/v1/traces/{trace}/mark", key=key)
    assert put.status_code == 200, put.text
    assert put.json()["marked"] is True and put.json()["extended_days"] == 30
    assert put.json()["trace_id"] == trace and put.json()["marked_by"].startswith("key ")
    assert api.request("PUT", f"/api/v1/traces/{trace}/mark", key=key).status_code == 200
    assert TraceMark.all_tenants.filter(tenant=acme, trace_hex=trace).count() == 1
    assert api.get(f"/api/v1/traces/{trace}", key=key).json()["trace"]["marked"] is True

    assert api.delete(f"/api/v1/traces/{trace}/mark", key=key).status_code == 204
    assert api.get(f"/api/v1/traces/{trace}", key=key).json()["trace"]["marked"] is False
    again = api.delete(f"/api/v1/traces/{trace}/mark", key=key)
    assert again.status_code == 404 and "not marked" in again.text
    actions = list(
        AuditEvent.all_tenants.filter(tenant=acme, action__startswith="trace.")
        .order_by("id")
        .values_list("action", "data")
    )
    assert actions == [("trace.mark", {"trace_id": trace}), ("trace.unmark", {"trace_id": trace})]


def test_it_refuses_bad_ids_unknown_traces_and_readers(api, acme, make_key):
    key = make_key(acme, "write")
    trace = send_trace(acme)
    bad = api.request("PUT", "/api/v1/traces/not-hex/mark", key=key)
    assert bad.status_code == 400 and "trace_id" in bad.json()["detail"]
    assert api.request("PUT", f"/api/v1/traces/{'f' * 32}/mark", key=key).status_code == 404
    reader = make_key(acme, "read")
    assert api.request("PUT", f"/api/v1/traces/{trace}/mark", key=reader).status_code == 403
    assert not TraceMark.all_tenants.exists()


def test_it_marks_from_the_trace_page_for_members_only(client, acme, acme_viewer):
    trace = send_trace(acme)
    page = f"/t/{acme.slug}/traces/{trace}/"
    client.force_login(acme.owner)
    assert "Mark to keep" in client.get(page).content.decode()
    response = client.post(f"{page}mark", {"marked": "1"})
    assert response.status_code == 302
    shown = client.get(page).content.decode()
    assert f"Marked by {acme.owner.get_username()}" in shown and "Remove mark" in shown
    assert AuditEvent.all_tenants.filter(tenant=acme, action="trace.mark").exists()

    client.force_login(acme_viewer)
    assert "Remove mark" not in client.get(page).content.decode()
    assert client.post(f"{page}mark", {"marked": "0"}).status_code == 403
    assert TraceMark.all_tenants.filter(tenant=acme, trace_hex=trace).exists()

    client.force_login(acme.owner)
    client.post(f"{page}mark", {"marked": "0"})
    assert not TraceMark.all_tenants.filter(tenant=acme).exists()
