"""Settings › Audit log: filters by actor, action and object; pages; tenant-scoped."""

import re

from controlplane import services
from controlplane.models import ApiKey

URL = "/t/acme/settings/audit/"


def _rows(html: str) -> list[str]:
    body = html.split('id="audit"')[1].split("</tbody>")[0]
    return re.findall(r'<td class="mono">([a-z_.]+)</td>', body)


def test_it_lists_the_tenants_changes_newest_first_with_their_actor(client, acme, globex):
    alice = services.Actor(user=acme.owner)
    key, _ = services.api_key_create(tenant=acme, name="ci", scopes=["read"], actor=alice)
    services.api_key_revoke(key=key, actor=services.Actor(api_key=key))
    services.api_key_create(tenant=globex, name="globex-only", scopes=["read"])
    client.force_login(acme.owner)
    html = client.get(URL).content.decode()
    assert _rows(html)[:2] == ["api_key.revoke", "api_key.create"]
    assert f"api-key:{key.prefix}" in html and "alice@acme.test" in html
    assert "globex-only" not in html


def test_it_filters_by_actor_action_and_object(client, acme, acme_viewer):
    alice = services.Actor(user=acme.owner)
    first, _ = services.api_key_create(tenant=acme, name="one", scopes=["read"], actor=alice)
    services.api_key_create(tenant=acme, name="two", scopes=["read"])
    services.api_key_revoke(key=first, actor=alice)
    client.force_login(acme_viewer)  # viewers read the log
    assert _rows(client.get(URL, {"action": "api_key.revoke"}).content.decode()) == [
        "api_key.revoke"
    ]
    by_alice = _rows(client.get(URL, {"actor": "alice"}).content.decode())
    assert by_alice == ["api_key.revoke", "api_key.create"]
    by_system = _rows(client.get(URL, {"actor": "system", "object": "apikey"}).content.decode())
    assert by_system == ["api_key.create"]
    one = _rows(client.get(URL, {"object": f"apikey:{first.pk}"}).content.decode())
    assert one == ["api_key.revoke", "api_key.create"]


def test_it_pages_the_log(client, acme):
    for n in range(55):
        services.api_key_create(tenant=acme, name=f"k{n}", scopes=["read"])
    client.force_login(acme.owner)
    first = client.get(URL, {"action": "api_key.create"}).content.decode()
    assert len(_rows(first)) == 50 and "page 1 of 2 · 55 events" in first
    assert 'href="?action=api_key.create&amp;page=2" rel="next"' in first
    second = client.get(URL, {"action": "api_key.create", "page": "2"}).content.decode()
    assert len(_rows(second)) == 5 and 'rel="prev"' in second and 'rel="next"' not in second
    assert ApiKey.all_tenants.filter(tenant=acme).count() == 55


def test_it_shows_bad_filters_in_the_form(client, acme):
    client.force_login(acme.owner)
    cases = [
        ({"page": "two"}, "Enter a whole number."),
        ({"page": "0"}, "greater than or equal to 1"),
        ({"page": "9"}, "there is only 1 page"),
        ({"action": "tenant.explode"}, "Select a valid choice."),
        ({"object": "api key!"}, "write a type, or a type and an id"),
    ]
    for params, message in cases:
        resp = client.get(URL, params)
        assert resp.status_code == 400, params
        html = resp.content.decode()
        assert message in html and 'id="audit-filters"' in html and 'id="audit"' not in html


def test_it_answers_404_for_another_tenants_log(client, acme, globex):
    client.force_login(acme.owner)
    assert client.get("/t/globex/settings/audit/").status_code == 404
