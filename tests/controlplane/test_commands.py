from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from controlplane import services
from controlplane.models import AuditEvent, Membership, Tenant


def run(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


@pytest.mark.django_db
def test_it_creates_a_tenant_with_owner_and_prints_the_key_last():
    lines = run("create_tenant", "initech", "--owner", "peter@initech.test")
    key = services.api_key_authenticate(raw_key=lines[-1])
    assert key.tenant.slug == "initech"
    assert set(key.scopes) == {"ingest", "read"}
    owner = Membership.all_tenants.get(tenant__slug="initech")
    assert owner.role == "owner" and owner.user.username == "peter@initech.test"
    assert any(line.startswith("password: ") for line in lines)
    assert AuditEvent.all_tenants.filter(tenant=key.tenant, action="tenant.create").exists()


@pytest.mark.django_db
def test_it_refuses_a_duplicate_tenant(acme):
    with pytest.raises(CommandError, match="already exists"):
        run("create_tenant", "acme")


@pytest.mark.django_db
def test_it_creates_a_key_with_the_given_scopes(acme):
    lines = run("create_api_key", "acme", "--scope", "ingest", "--scope", "read")
    key = services.api_key_authenticate(raw_key=lines[-1])
    assert key.tenant == acme and key.scopes == ["ingest", "read"]
    with pytest.raises(CommandError, match="no tenant"):
        run("create_api_key", "nope", "--scope", "read")


@pytest.mark.django_db
def test_it_sets_up_the_demo_once(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first = run("demo_setup")
    key_line = next(line for line in first if line.startswith("api key: "))
    assert run("demo_setup") == first
    assert Tenant.objects.filter(slug="demo").count() == 1
    key = services.api_key_authenticate(raw_key=key_line.removeprefix("api key: "))
    assert key.tenant.slug == "demo"
    assert oct((tmp_path / "demo-credentials.txt").stat().st_mode)[-3:] == "600"


@pytest.mark.django_db
def test_it_makes_the_demo_owner_an_ordinary_owner_and_prints_the_console(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    lines = run("demo_setup")
    assert "Flightdeck is starting: the console is http://127.0.0.1:8000/t/demo/" in lines
    assert not any("/admin/" in line for line in lines)
    owner = Membership.all_tenants.get(tenant__slug="demo")
    assert owner.role == "owner" and not owner.user.is_staff and not owner.user.is_superuser


@pytest.mark.django_db
def test_it_creates_a_staff_user_and_prints_the_password_once(client):
    lines = run("create_staff", "ops@flightdeck.test")
    password = next(line for line in lines if line.startswith("password: ")).removeprefix(
        "password: "
    )
    assert client.login(username="ops@flightdeck.test", password=password)
    assert client.get("/admin/").status_code == 200
    again = run("create_staff", "ops@flightdeck.test")
    assert "password: (unchanged: the user existed already)" in again and password not in again
