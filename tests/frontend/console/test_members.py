"""Settings › Members: add by e-mail, change a role, remove; a tenant always keeps an owner."""

from django.contrib.auth import get_user_model

from controlplane.models import AuditEvent, Membership, Role
from tests.factories import MembershipFactory, UserFactory

URL = "/t/acme/settings/members/"


def _membership(tenant, user):
    return Membership.all_tenants.get(tenant=tenant, user=user)


def test_it_lists_members_with_their_roles_and_owners_get_the_controls(client, acme, acme_viewer):
    client.force_login(acme.owner)
    html = client.get(URL).content.decode()
    assert "alice@acme.test" in html and "bob@acme.test" in html
    assert 'id="add-member"' in html and 'name="role"' in html and ">Remove</button>" in html


def test_it_shows_a_viewer_the_members_without_controls_and_refuses_their_posts(
    client, acme, acme_viewer
):
    client.force_login(acme_viewer)
    html = client.get(URL).content.decode()
    assert "alice@acme.test" in html
    assert 'id="add-member"' not in html and 'name="role"' not in html and "Remove" not in html
    owner = _membership(acme, acme.owner)
    for path, data in [
        (URL, {"email": "eve@acme.test", "role": "owner"}),
        (f"{URL}{owner.pk}/role", {"role": "viewer"}),
        (f"{URL}{owner.pk}/remove", {}),
    ]:
        resp = client.post(path, data)
        assert resp.status_code == 403, path
        assert b"may not change settings" in resp.content
    assert _membership(acme, acme.owner).role == Role.OWNER
    assert not get_user_model().objects.filter(username="eve@acme.test").exists()


def test_it_refuses_a_member_changing_roles(client, acme, acme_member, acme_viewer):
    client.force_login(acme_member)
    bob = _membership(acme, acme_viewer)
    assert client.post(f"{URL}{bob.pk}/role", {"role": "admin"}).status_code == 403
    assert _membership(acme, acme_viewer).role == Role.VIEWER


def test_it_adds_an_existing_user_by_email_with_a_role_and_audits_it(client, acme):
    UserFactory(username="frank@example.com")
    client.force_login(acme.owner)
    resp = client.post(URL, {"email": "frank@example.com", "role": "member"})
    html = resp.content.decode()
    assert resp.status_code == 200 and 'id="added"' in html and 'id="new-password"' not in html
    frank = get_user_model().objects.get(username="frank@example.com")
    assert _membership(acme, frank).role == Role.MEMBER
    event = AuditEvent.all_tenants.get(
        tenant=acme, action="membership.set", data__user=frank.username
    )
    assert event.actor_user == acme.owner and event.data["role"] == "member"


def test_it_creates_a_new_user_and_shows_their_password_once(client, acme):
    client.force_login(acme.owner)
    resp = client.post(URL, {"email": "gina@example.com", "role": "viewer"})
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    html = resp.content.decode()
    password = html.split('id="new-password">')[1].split("<")[0]
    assert client.login(username="gina@example.com", password=password)
    client.force_login(acme.owner)
    assert password not in client.get(URL).content.decode()


def test_it_shows_bad_input_in_the_add_form(client, acme, acme_viewer):
    client.force_login(acme.owner)
    cases = [
        ({"email": "not an e-mail", "role": "member"}, "Enter a valid email address."),
        ({"email": "", "role": "member"}, "This field is required."),
        ({"email": "hal@example.com", "role": "superuser"}, "Select a valid choice."),
        ({"email": "bob@acme.test", "role": "admin"}, "bob@acme.test is already a member"),
    ]
    for data, message in cases:
        resp = client.post(URL, data)
        html = resp.content.decode()
        assert resp.status_code == 400, data
        assert message in html and 'id="add-member"' in html, data
    assert _membership(acme, acme_viewer).role == Role.VIEWER
    assert not get_user_model().objects.filter(username="hal@example.com").exists()


def test_it_changes_a_role_and_removes_a_member(client, acme, acme_viewer):
    client.force_login(acme.owner)
    bob = _membership(acme, acme_viewer)
    resp = client.post(f"{URL}{bob.pk}/role", {"role": "admin"}, follow=True)
    assert resp.status_code == 200 and "bob@acme.test is now admin." in resp.content.decode()
    assert _membership(acme, acme_viewer).role == Role.ADMIN
    resp = client.post(f"{URL}{bob.pk}/remove", follow=True)
    assert "bob@acme.test was removed." in resp.content.decode()
    assert not Membership.all_tenants.filter(tenant=acme, user=acme_viewer).exists()
    removed = AuditEvent.all_tenants.get(tenant=acme, action="membership.remove")
    assert removed.data == {"user": "bob@acme.test", "role": "admin"}


def test_it_shows_a_bad_role_in_its_row(client, acme, acme_viewer):
    client.force_login(acme.owner)
    bob = _membership(acme, acme_viewer)
    resp = client.post(f"{URL}{bob.pk}/role", {"role": "root"})
    assert resp.status_code == 400 and "Select a valid choice." in resp.content.decode()


def test_it_always_keeps_an_owner(client, acme):
    client.force_login(acme.owner)
    alice = _membership(acme, acme.owner)
    for path, data in [
        (f"{URL}{alice.pk}/role", {"role": "admin"}),
        (f"{URL}{alice.pk}/remove", {}),
    ]:
        resp = client.post(path, data)
        assert resp.status_code == 400
        assert "a tenant always keeps an owner" in resp.content.decode()
    assert _membership(acme, acme.owner).role == Role.OWNER
    # With a second owner, the first may step down.
    MembershipFactory(tenant=acme, user=UserFactory(), role=Role.OWNER)
    assert client.post(f"{URL}{alice.pk}/role", {"role": "admin"}).status_code == 302
    assert _membership(acme, acme.owner).role == Role.ADMIN


def test_it_lets_only_an_owner_make_or_change_an_owner(client, acme, acme_admin, acme_viewer):
    client.force_login(acme_admin)
    bob, alice = _membership(acme, acme_viewer), _membership(acme, acme.owner)
    for path, data in [
        (f"{URL}{bob.pk}/role", {"role": "owner"}),
        (f"{URL}{alice.pk}/remove", {}),
        (URL, {"email": "ivan@example.com", "role": "owner"}),
    ]:
        resp = client.post(path, data)
        assert resp.status_code == 400, path
        assert "only an owner can make someone an owner" in resp.content.decode()
    assert _membership(acme, acme_viewer).role == Role.VIEWER
    assert client.post(f"{URL}{bob.pk}/role", {"role": "member"}).status_code == 302


def test_it_answers_404_for_another_tenants_member(client, acme, globex):
    client.force_login(acme.owner)
    charlie = _membership(globex, globex.owner)
    assert client.post(f"{URL}{charlie.pk}/role", {"role": "viewer"}).status_code == 404
    assert client.post(f"{URL}{charlie.pk}/remove").status_code == 404
    assert client.get("/t/globex/settings/members/").status_code == 404
    assert _membership(globex, globex.owner).role == Role.OWNER
