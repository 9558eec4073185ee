"""Settings › Tools, Credentials and Allowed hosts: execution's settings through its services."""

import json

from controlplane.models import AuditEvent
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services, vault
from execution.models import AllowedHost, Credential, ToolDefinition

TOOLS = "/t/acme/settings/tools/"
CREDENTIALS = "/t/acme/settings/credentials/"
HOSTS = "/t/acme/settings/allowed-hosts/"
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def _as(tenant, service, **kwargs):
    """Set a tenant up through execution's services, which run in its scope."""
    with tenant_scope(tenant):
        return service(tenant=tenant, actor=Actor.system(), **kwargs)


def _tool(**changes) -> dict:
    return {
        "name": "lookup",
        "description": "Looks an order up",
        "url": "https://api.example.com/lookup",
        "schema": json.dumps(SCHEMA),
        "credential": "",
        "credential_header": "Authorization",
        "credential_format": "Bearer {}",
        "timeout_seconds": "5",
        "fallback": "",
        "rate_per_minute": "",
        **changes,
    }


def test_it_defines_a_webhook_tool_with_its_schema_and_audits_it(client, acme):
    _as(acme, services.credential_set, name="orders-token", value="s3cret")
    client.force_login(acme.owner)
    resp = client.post(TOOLS, _tool(credential="orders-token", slow="on"), follow=True)
    assert "Tool lookup is defined" in resp.content.decode()
    tool = ToolDefinition.all_tenants.get(tenant=acme, name="lookup")
    assert tool.schema == SCHEMA and tool.credential == "orders-token" and tool.slow
    assert tool.timeout_seconds == 5 and tool.rate_per_minute is None
    assert AuditEvent.all_tenants.filter(tenant=acme, action="tool.create").exists()
    html = client.get(TOOLS).content.decode()
    assert 'data-tool="lookup"' in html and "&quot;required&quot;: [" in html
    assert "https://api.example.com/lookup" in html and "Bearer {}" in html


def test_it_shows_bad_tool_input_in_the_form(client, acme):
    _as(acme, services.tool_definition_create, name="taken", url="https://api.example.com/")
    client.force_login(acme.owner)
    cases = [
        (_tool(schema="{not json"), "Enter a valid JSON."),
        (_tool(schema='{"type": "nonsense"}'), "schema: not a valid JSON schema"),
        (_tool(url="not a url"), "Enter a valid URL."),
        (_tool(name="has spaces"), "Enter a valid “slug”"),
        (_tool(name=""), "This field is required."),
        (_tool(name="taken"), "a tool named &#x27;taken&#x27; already exists"),
        (_tool(credential="missing"), "Select a valid choice. missing is not one"),
        (_tool(timeout_seconds="0"), "greater than or equal to 0.1"),
        (_tool(rate_per_minute="-3"), "greater than or equal to 0"),
    ]
    for data, message in cases:
        resp = client.post(TOOLS, data)
        html = resp.content.decode()
        assert resp.status_code == 400, data
        assert message in html and 'id="define-tool"' in html, (data, message)
    assert list(ToolDefinition.all_tenants.filter(tenant=acme).values_list("name", flat=True)) == [
        "taken"
    ]


def test_it_stores_credentials_by_name_and_never_shows_a_value(client, acme):
    client.force_login(acme.owner)
    resp = client.post(CREDENTIALS, {"name": "orders-token", "value": "first s3cret"}, follow=True)
    html = resp.content.decode()
    assert "Credential orders-token is stored." in html and "first s3cret" not in html
    client.post(CREDENTIALS, {"name": "orders-token", "value": "second s3cret"})
    credential = Credential.all_tenants.get(tenant=acme, name="orders-token")
    assert vault.decrypt(bytes(credential.ciphertext)) == "second s3cret"
    actions = AuditEvent.all_tenants.filter(tenant=acme, target_type="credential")
    assert sorted(actions.values_list("action", flat=True)) == [
        "credential.create",
        "credential.update",
    ]
    assert all("s3cret" not in json.dumps(e.data) for e in actions)
    html = client.get(CREDENTIALS).content.decode()
    assert "orders-token" in html and "s3cret" not in html


def test_it_shows_bad_credential_input_in_the_form_without_echoing_the_value(client, acme):
    client.force_login(acme.owner)
    for data, message in [
        ({"name": "has spaces", "value": "s3cret"}, "Enter a valid “slug”"),
        ({"name": "ok", "value": ""}, "This field is required."),
        ({"name": "", "value": "s3cret"}, "This field is required."),
    ]:
        resp = client.post(CREDENTIALS, data)
        html = resp.content.decode()
        assert resp.status_code == 400 and message in html and "s3cret" not in html, data
    assert not Credential.all_tenants.filter(tenant=acme).exists()


def test_it_allows_a_host_and_shows_a_bad_one_in_the_form(client, acme):
    client.force_login(acme.owner)
    resp = client.post(HOSTS, {"host": " API.Example.com "}, follow=True)
    assert "Tools may call api.example.com." in resp.content.decode()
    assert AllowedHost.all_tenants.get(tenant=acme).host == "api.example.com"
    assert AuditEvent.all_tenants.filter(tenant=acme, action="allowed_host.add").exists()
    for data, message in [
        ({"host": "https://api.example.com/x"}, "is not a host"),
        ({"host": "two words"}, "is not a host"),
        ({"host": ""}, "This field is required."),
        ({"host": "a" * 256}, "at most 255 characters"),
    ]:
        resp = client.post(HOSTS, data)
        assert resp.status_code == 400 and message in resp.content.decode(), data
    assert AllowedHost.all_tenants.filter(tenant=acme).count() == 1


def test_it_shows_viewers_and_members_these_pages_without_controls_and_refuses_their_posts(
    client, acme, acme_viewer, acme_member
):
    _as(acme, services.allowed_host_add, host="api.example.com")
    _as(acme, services.credential_set, name="orders-token", value="s3cret")
    for user in (acme_viewer, acme_member):
        client.force_login(user)
        pages = [
            (TOOLS, "define-tool", _tool()),
            (CREDENTIALS, "store-credential", {"name": "x", "value": "y"}),
            (HOSTS, "allow-host", {"host": "evil.test"}),
        ]
        for url, form_id, data in pages:
            html = client.get(url).content.decode()
            assert f'id="{form_id}"' not in html, url
            assert client.post(url, data).status_code == 403, url
        assert "api.example.com" in client.get(HOSTS).content.decode()
        assert "orders-token" in client.get(CREDENTIALS).content.decode()
    assert not ToolDefinition.all_tenants.filter(tenant=acme).exists()
    assert list(AllowedHost.all_tenants.values_list("host", flat=True)) == ["api.example.com"]


def test_it_keeps_each_tenants_tools_credentials_and_hosts_to_itself(client, acme, globex):
    _as(globex, services.allowed_host_add, host="globex.example.com")
    _as(globex, services.credential_set, name="globex-token", value="x")
    _as(globex, services.tool_definition_create, name="globex-tool", url="https://g.example.com/")
    client.force_login(acme.owner)
    for url, theirs in [
        (TOOLS, "globex-tool"),
        (CREDENTIALS, "globex-token"),
        (HOSTS, "globex.example.com"),
    ]:
        assert theirs not in client.get(url).content.decode()
        assert client.get(url.replace("/acme/", "/globex/")).status_code == 404
    # A globex credential name is not a choice for an acme tool.
    resp = client.post(TOOLS, _tool(credential="globex-token"))
    assert resp.status_code == 400 and "Select a valid choice." in resp.content.decode()
