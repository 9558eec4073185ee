"""Settings › API keys: create with scopes (shown once), revoke, last used."""

import re

from controlplane import services
from controlplane.models import ApiKey, AuditEvent

URL = "/t/acme/settings/keys/"


def test_it_creates_a_key_with_scopes_and_shows_it_once(client, acme):
    client.force_login(acme.owner)
    resp = client.post(URL, {"name": "exporter", "scopes": ["ingest", "read"]})
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    raw = re.search(r'id="new-key">([^<]+)<', resp.content.decode()).group(1)
    key = services.api_key_authenticate(raw_key=raw)
    assert key.tenant == acme and key.scopes == ["ingest", "read"] and key.name == "exporter"
    assert AuditEvent.all_tenants.filter(tenant=acme, action="api_key.create").exists()
    listing = client.get(URL).content.decode()
    assert raw not in listing and key.prefix in listing and "ingest, read" in listing


def test_it_lists_when_a_key_was_last_used(client, acme, make_key):
    raw = make_key(acme, "read")
    client.force_login(acme.owner)
    assert "never" in client.get(URL).content.decode()
    services.api_key_authenticate(raw_key=raw)
    key = ApiKey.all_tenants.get(tenant=acme)
    html = client.get(URL).content.decode()
    assert key.last_used_at.strftime("%Y-%m-%d %H:%M") in html and "never" not in html


def test_it_shows_bad_input_in_the_create_form(client, acme):
    client.force_login(acme.owner)
    cases = [
        ({"name": "", "scopes": ["read"]}, "This field is required."),
        ({"name": "   ", "scopes": ["read"]}, "This field is required."),
        ({"name": "x" * 101, "scopes": ["read"]}, "at most 100 characters"),
        ({"name": "ci"}, "This field is required."),
        ({"name": "ci", "scopes": ["root"]}, "Select a valid choice. root is not one"),
    ]
    for data, message in cases:
        resp = client.post(URL, data)
        assert resp.status_code == 400, data
        html = resp.content.decode()
        assert message in html and 'id="create-key"' in html and 'id="new-key"' not in html, data
    assert not ApiKey.all_tenants.filter(tenant=acme).exists()


def test_it_revokes_a_key_and_audits_it(client, acme, make_key):
    raw = make_key(acme, "read")
    key = ApiKey.all_tenants.get(tenant=acme)
    client.force_login(acme.owner)
    resp = client.post(f"{URL}{key.pk}/revoke", follow=True)
    assert "is revoked." in resp.content.decode() and "revoked</span>" in resp.content.decode()
    assert services.api_key_authenticate(raw_key=raw) is None
    event = AuditEvent.all_tenants.get(tenant=acme, action="api_key.revoke")
    assert event.actor_user == acme.owner and event.target_id == str(key.pk)


def test_it_shows_a_viewer_the_keys_without_controls_and_refuses_their_posts(
    client, acme, acme_viewer, acme_member, make_key
):
    raw = make_key(acme, "read")
    key = ApiKey.all_tenants.get(tenant=acme)
    for user in (acme_viewer, acme_member):
        client.force_login(user)
        html = client.get(URL).content.decode()
        assert key.prefix in html and 'id="create-key"' not in html and "Revoke" not in html
        assert client.post(URL, {"name": "mine", "scopes": ["admin"]}).status_code == 403
        assert client.post(f"{URL}{key.pk}/revoke").status_code == 403
    assert ApiKey.all_tenants.filter(tenant=acme).count() == 1
    assert services.api_key_authenticate(raw_key=raw) is not None


def test_it_answers_404_for_another_tenants_key(client, acme, globex, make_key):
    raw = make_key(globex, "read")
    key = ApiKey.all_tenants.get(tenant=globex)
    client.force_login(acme.owner)
    assert client.post(f"{URL}{key.pk}/revoke").status_code == 404
    assert key.prefix not in client.get(URL).content.decode()
    assert client.get("/t/globex/settings/keys/").status_code == 404
    assert services.api_key_authenticate(raw_key=raw) is not None
