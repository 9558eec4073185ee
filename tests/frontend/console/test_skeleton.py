"""The console's frame: top navigation, settings sub-navigation, role checks."""

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from controlplane.models import Role
from frontend import roles
from frontend.console.settings.pages import PAGES
from tests.factories import MembershipFactory, UserFactory


def test_it_shows_the_console_sections_in_the_top_navigation(client, acme):
    client.force_login(acme.owner)
    html = client.get("/t/acme/runs/").content.decode()
    for label, href in [
        ("Traces", "/t/acme/traces/"),
        ("Sessions", "/t/acme/sessions/"),
        ("Runs", "/t/acme/runs/"),
        ("Agents", "/t/acme/agents/"),
        ("Settings", "/t/acme/settings/"),
    ]:
        assert f'href="{href}"' in html and f">{label}</a>" in html
    assert 'href="/t/acme/runs/" aria-current="page"' in html


def test_it_opens_settings_on_its_first_page_with_every_page_in_the_sub_navigation(client, acme):
    client.force_login(acme.owner)
    resp = client.get("/t/acme/settings/")
    assert resp.status_code == 302 and resp["Location"] == f"/t/acme/settings/{PAGES[0].slug}/"
    html = client.get(resp["Location"]).content.decode()
    for page in PAGES:
        assert f'href="/t/acme/settings/{page.slug}/"' in html
    assert f'href="/t/acme/settings/{PAGES[0].slug}/" aria-current="page"' in html


def test_it_opens_the_console_on_the_tenants_traces(client, acme):
    client.force_login(acme.owner)
    resp = client.get("/t/acme/")
    assert resp.status_code == 302 and resp["Location"] == "/t/acme/traces/"


def test_it_answers_404_for_another_tenants_console(client, acme, globex):
    client.force_login(acme.owner)
    for path in ["", "runs/", "agents/", "settings/", *[f"settings/{p.slug}/" for p in PAGES]]:
        assert client.get(f"/t/globex/{path}").status_code == 404, path


@pytest.mark.parametrize(
    ("role", "run", "change_settings"),
    [
        (Role.VIEWER, False, False),
        (Role.MEMBER, True, False),
        (Role.ADMIN, True, True),
        (Role.OWNER, True, True),
    ],
)
def test_it_lets_viewers_read_members_run_and_admins_change_settings(
    acme, role, run, change_settings
):
    membership = MembershipFactory(tenant=acme, user=UserFactory(), role=role)
    assert roles.allows(membership, roles.READ)
    assert roles.allows(membership, roles.RUN) is run
    assert roles.allows(membership, roles.CHANGE_SETTINGS) is change_settings


def test_it_refuses_a_post_from_a_too_low_role_and_lets_reads_through(acme, acme_viewer):
    @roles.requires(roles.CHANGE_SETTINGS)
    def view(request):
        return HttpResponse("done")

    factory = RequestFactory()
    for method in ("get", "post"):
        request = getattr(factory, method)("/t/acme/settings/members/")
        request.user, request.tenant = acme_viewer, acme
        request.membership = acme.membership_set.get(user=acme_viewer)
        resp = view(request)
        if method == "get":
            assert resp.status_code == 200 and resp.content == b"done"
        else:
            assert resp.status_code == 403 and b"may not change settings" in resp.content
