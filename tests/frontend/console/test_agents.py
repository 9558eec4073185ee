"""The console's agents pages through Django's test client: agents and their versions,
creating an agent, uploading a bundle (the API's checks), roles and tenancy."""

import os
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.models import AuditEvent
from controlplane.tenancy import tenant_scope
from execution.models import Agent, AgentVersion
from tests.execution.bundles import agent_with_bundle, make_bundle, tar_with_symlink
from tests.frontend.console.pagetext import visible

AGENT = "def main(ctx, input):\n    return input\n"
MANIFEST = """entrypoint = "agent:main"
model = "claude-sonnet-5"
tools = ["python", "echo"]
[limits]
max_steps = 12
[rate_limits]
llm_per_minute = 30
[input_schema]
type = "object"
"""


def bundle(files=None, name="agent.tar.gz"):
    data = make_bundle(files or {"flightdeck.toml": MANIFEST, "agent.py": AGENT})
    return SimpleUploadedFile(name, data, content_type="application/gzip")


def versions_of(tenant, name):
    with tenant_scope(tenant):
        return list(AgentVersion.objects.filter(agent__name=name).values_list("version", flat=True))


def test_it_lists_agents_with_their_latest_version(client, acme):
    agent_with_bundle(acme, name="asker", code=AGENT, manifest=MANIFEST)
    with tenant_scope(acme):
        Agent.objects.create(tenant=acme, name="empty")
    client.force_login(acme.owner)
    html = client.get("/t/acme/agents/").content.decode()
    asker = visible(re.search(r'<tr class="agent-row" data-agent="asker">.*?</tr>', html, re.S)[0])
    assert "asker v1 claude-sonnet-5 python, echo 1" in asker and "Start a run" in asker
    empty = visible(re.search(r'<tr class="agent-row" data-agent="empty">.*?</tr>', html, re.S)[0])
    assert "none yet" in empty and "Start a run" not in empty


def test_it_creates_an_agent_through_the_service(client, acme):
    client.force_login(acme.owner)
    resp = client.post("/t/acme/agents/", {"name": "calculator", "description": "Adds up"})
    with tenant_scope(acme):
        agent = Agent.objects.get(name="calculator")
        event = AuditEvent.objects.get(action="agent.create")
    assert resp.status_code == 302 and resp["Location"] == f"/t/acme/agents/{agent.pk}/"
    assert agent.description == "Adds up" and event.actor_user == acme.owner


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "two words"}, "Enter a valid “slug”"),
        ({"name": ""}, "This field is required."),
        ({"name": "x" * 101}, "Ensure this value has at most 100 characters"),
        ({"name": "taken"}, "an agent named 'taken' already exists"),
    ],
)
def test_it_refuses_a_bad_agent_name_in_the_form(client, acme, fields, says):
    agent_with_bundle(acme, name="taken", code=AGENT)
    client.force_login(acme.owner)
    resp = client.post("/t/acme/agents/", fields)
    assert resp.status_code == 400 and says in visible(resp.content.decode())
    assert 'id="agent-create"' in resp.content.decode()
    with tenant_scope(acme):
        assert list(Agent.objects.values_list("name", flat=True)) == ["taken"]


def test_it_uploads_a_version_and_shows_its_manifest_tools_and_limits(client, acme):
    client.force_login(acme.owner)
    client.post("/t/acme/agents/", {"name": "asker"})
    with tenant_scope(acme):
        agent = Agent.objects.get(name="asker")
    resp = client.post(f"/t/acme/agents/{agent.pk}/versions", {"bundle": bundle()})
    assert resp.status_code == 302 and resp["Location"] == f"/t/acme/agents/{agent.pk}/#v1"
    client.post(f"/t/acme/agents/{agent.pk}/versions", {"bundle": bundle()})
    html = client.get(f"/t/acme/agents/{agent.pk}/").content.decode()
    text = visible(html)
    assert html.index('id="v2"') < html.index('id="v1"')  # newest first
    assert "Entrypoint agent:main Model claude-sonnet-5 Tools python, echo" in text
    assert "max_steps 12" in text and "llm_per_minute 30 / min" in text
    assert 'Input schema { "type": "object" }' in text
    with tenant_scope(acme):
        event = AuditEvent.objects.filter(action="agent.version.create").first()
    assert event.actor_user == acme.owner and versions_of(acme, "asker") == [1, 2]


@pytest.mark.parametrize(
    ("upload", "status", "says"),
    [
        (None, 400, "Choose a bundle (.tar.gz or .zip) to upload."),
        (SimpleUploadedFile("a.tar.gz", b"not an archive"), 400, "neither a .tar.gz nor a .zip"),
        (bundle({"agent.py": AGENT}), 400, "the bundle has no flightdeck.toml at its root"),
        (
            bundle({"flightdeck.toml": 'entrypoint = "agent:run"\n', "agent.py": AGENT}),
            400,
            "entrypoint function 'run' is not defined in agent.py",
        ),
        (
            bundle(
                {
                    "flightdeck.toml": 'entrypoint = "agent:main"\ntools = ["nope"]\n',
                    "agent.py": AGENT,
                }
            ),
            400,
            "flightdeck.toml names unknown tools ['nope']",
        ),
        (
            bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "../evil.py": "x"}),
            400,
            "leaves the bundle (path traversal)",
        ),
        (
            SimpleUploadedFile("l.tar.gz", tar_with_symlink("agent.py", "/etc/passwd")),
            400,
            "is a link or device",
        ),
        (
            bundle({"flightdeck.toml": MANIFEST, "agent.py": AGENT, "pad.bin": os.urandom(4096)}),
            413,
            "over the limit of 2048.",
        ),
    ],
)
def test_it_refuses_bad_bundles_in_the_form_saying_why(
    client, acme, settings, upload, status, says
):
    settings.EXECUTION_BUNDLE_MAX_BYTES = 2048
    agent = agent_with_bundle(acme, name="asker", code=AGENT)
    client.force_login(acme.owner)
    resp = client.post(f"/t/acme/agents/{agent.pk}/versions", {"bundle": upload} if upload else {})
    assert resp.status_code == status
    assert says in visible(resp.content.decode()) and 'id="bundle-upload"' in resp.content.decode()
    assert versions_of(acme, "asker") == [1]


def test_it_lets_a_viewer_read_agents_but_not_create_or_upload(client, acme, acme_viewer):
    agent = agent_with_bundle(acme, name="asker", code=AGENT, manifest=MANIFEST)
    client.force_login(acme_viewer)
    listing = client.get("/t/acme/agents/").content.decode()
    assert "asker" in listing and 'id="agent-create"' not in listing
    assert "Start a run" not in listing
    page = client.get(f"/t/acme/agents/{agent.pk}/").content.decode()
    assert "claude-sonnet-5" in page and 'id="bundle-upload"' not in page
    assert client.post("/t/acme/agents/", {"name": "mine"}).status_code == 403
    refused = client.post(f"/t/acme/agents/{agent.pk}/versions", {"bundle": bundle()})
    assert refused.status_code == 403
    assert versions_of(acme, "asker") == [1]
    with tenant_scope(acme):
        assert not Agent.objects.filter(name="mine").exists()


def test_it_answers_404_for_another_tenants_agent(client, acme, globex):
    theirs = agent_with_bundle(globex, name="secret", code=AGENT)
    client.force_login(acme.owner)
    assert client.get(f"/t/acme/agents/{theirs.pk}/").status_code == 404
    upload = client.post(f"/t/acme/agents/{theirs.pk}/versions", {"bundle": bundle()})
    assert upload.status_code == 404
    assert "secret" not in client.get("/t/acme/agents/").content.decode()
    assert client.get(f"/t/globex/agents/{theirs.pk}/").status_code == 404
    assert versions_of(globex, "secret") == [1]
