"""Settings › Retention: the days per tier through the service (audited), the bytes
stored per tier, and legal holds."""

from controlplane.models import AuditEvent
from tracing.retention.models import LegalHold, RetentionPolicy

URL = "/t/acme/settings/retention/"
DAYS = {"hot_days": "2", "warm_days": "5", "cold_days": "40", "extended_days": "90"}


def test_it_saves_days_through_the_service_and_audits_them(client, acme):
    client.force_login(acme.owner)
    LegalHold.all_tenants.create(tenant=acme, scope="session", value="case-77")
    page = client.get(URL).content.decode()
    assert "Legal holds" in page and "case-77" in page and "Blob store" in page
    resp = client.post(URL, {**DAYS, "agents": '{"support": {"hot_days": 1}}'}, follow=True)
    assert "Saved" in resp.content.decode()
    policy = RetentionPolicy.all_tenants.get(tenant=acme)
    assert (policy.hot_days, policy.cold_days, policy.agents) == (
        2,
        40,
        {"support": {"hot_days": 1}},
    )
    assert AuditEvent.all_tenants.filter(tenant=acme, action="retention.update").exists()


def test_it_shows_a_bad_agent_override_on_its_field(client, acme):
    client.force_login(acme.owner)
    resp = client.post(URL, {**DAYS, "agents": '{"support": {"hot_days": -3}}'})
    assert resp.status_code == 400
    assert "agents.support.hot_days must be a whole number" in resp.content.decode()
    assert not RetentionPolicy.all_tenants.filter(tenant=acme).exists()


def test_it_lets_viewers_read_but_not_change(client, acme, acme_viewer):
    client.force_login(acme_viewer)
    assert client.get(URL).status_code == 200
    assert client.post(URL, DAYS).status_code == 403
    assert not RetentionPolicy.all_tenants.filter(tenant=acme).exists()
