"""Django's admin is platform staff's console: membership and key changes made there are
audited through the services like the tenant console's."""

import pytest

from controlplane.models import ApiKey, AuditEvent, Membership, Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(
        UserFactory(username="ops@flightdeck.test", is_staff=True, is_superuser=True)
    )
    return client


def _tenant_form(tenant, rows: list[dict]) -> dict:
    """The tenant change form with its membership inline, one dict per row."""
    data = {
        "slug": tenant.slug,
        "name": tenant.name,
        "is_active": "on",
        "membership_set-TOTAL_FORMS": str(len(rows)),
        "membership_set-INITIAL_FORMS": str(sum(1 for r in rows if r.get("id"))),
        "membership_set-MIN_NUM_FORMS": "0",
        "membership_set-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        for key, value in {"tenant": tenant.pk, **row}.items():
            data[f"membership_set-{i}-{key}"] = value
    return data


def _row(membership, **changes) -> dict:
    return {"id": membership.pk, "user": membership.user_id, "role": membership.role, **changes}


def test_it_audits_memberships_added_changed_and_removed_inline(staff_client, acme, acme_viewer):
    alice = Membership.all_tenants.get(tenant=acme, user=acme.owner)
    bob = Membership.all_tenants.get(tenant=acme, user=acme_viewer)
    newcomer = UserFactory(username="nina@acme.test")
    url = f"/admin/controlplane/tenant/{acme.pk}/change/"
    rows = [_row(alice), _row(bob, role="member"), {"user": newcomer.pk, "role": "viewer"}]
    resp = staff_client.post(url, _tenant_form(acme, rows))
    assert resp.status_code == 302
    assert Membership.all_tenants.get(pk=bob.pk).role == Role.MEMBER
    assert Membership.all_tenants.get(tenant=acme, user=newcomer).role == Role.VIEWER
    audited = AuditEvent.all_tenants.filter(tenant=acme, action="membership.set")
    assert {(e.data["user"], e.data["role"]) for e in audited} >= {
        ("bob@acme.test", "member"),
        ("nina@acme.test", "viewer"),
    }
    assert all(e.actor_user.username == "ops@flightdeck.test" for e in audited)

    rows = [_row(alice), _row(bob, role="member", DELETE="on")]
    assert staff_client.post(url, _tenant_form(acme, rows)).status_code == 302
    assert not Membership.all_tenants.filter(pk=bob.pk).exists()
    removed = AuditEvent.all_tenants.get(tenant=acme, action="membership.remove")
    assert removed.data == {"user": "bob@acme.test", "role": "member"}


def test_it_keeps_an_owner_when_memberships_are_edited_inline(staff_client, acme):
    alice = Membership.all_tenants.get(tenant=acme, user=acme.owner)
    url = f"/admin/controlplane/tenant/{acme.pk}/change/"
    for row in (_row(alice, role="admin"), _row(alice, DELETE="on")):
        resp = staff_client.post(url, _tenant_form(acme, [row]))
        assert resp.status_code == 200 and "a tenant always keeps an owner" in resp.content.decode()
    assert Membership.all_tenants.get(pk=alice.pk).role == Role.OWNER
    # Handing ownership over in one save works: the new owner is saved first.
    bob = MembershipFactory(tenant=acme, user=UserFactory(), role=Role.ADMIN)
    rows = [_row(alice, role="admin"), _row(bob, role="owner")]
    assert staff_client.post(url, _tenant_form(acme, rows)).status_code == 302
    assert Membership.all_tenants.get(pk=alice.pk).role == Role.ADMIN
    assert Membership.all_tenants.get(pk=bob.pk).role == Role.OWNER


def test_it_changes_and_deletes_a_membership_through_the_services(staff_client, acme, acme_viewer):
    alice = Membership.all_tenants.get(tenant=acme, user=acme.owner)
    bob = Membership.all_tenants.get(tenant=acme, user=acme_viewer)
    resp = staff_client.post(
        f"/admin/controlplane/membership/{alice.pk}/change/", {"role": "viewer"}
    )
    assert resp.status_code == 200 and "a tenant always keeps an owner" in resp.content.decode()
    resp = staff_client.post(f"/admin/controlplane/membership/{bob.pk}/change/", {"role": "admin"})
    assert resp.status_code == 302
    assert Membership.all_tenants.get(pk=bob.pk).role == Role.ADMIN
    assert staff_client.get(f"/admin/controlplane/membership/{alice.pk}/delete/").status_code == 403
    resp = staff_client.post(f"/admin/controlplane/membership/{bob.pk}/delete/", {"post": "yes"})
    assert resp.status_code == 302 and not Membership.all_tenants.filter(pk=bob.pk).exists()
    assert AuditEvent.all_tenants.filter(tenant=acme, action="membership.remove").count() == 1


def test_it_audits_an_api_key_renamed_in_the_admin_and_never_deletes_one(staff_client, acme):
    from controlplane import services

    key, _ = services.api_key_create(tenant=acme, name="old name", scopes=["read"])
    url = f"/admin/controlplane/apikey/{key.pk}/change/"
    assert staff_client.post(url, {"name": "new name"}).status_code == 302
    assert ApiKey.all_tenants.get(pk=key.pk).name == "new name"
    event = AuditEvent.all_tenants.get(tenant=acme, action="api_key.rename")
    assert event.data == {"from": "old name", "to": "new name"}
    assert event.actor_user.username == "ops@flightdeck.test"
    assert staff_client.get(f"/admin/controlplane/apikey/{key.pk}/delete/").status_code == 403


def test_it_keeps_the_admin_to_platform_staff(client, acme):
    client.force_login(acme.owner)
    resp = client.get("/admin/")
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")
    assert client.get("/t/acme/settings/members/").status_code == 200
