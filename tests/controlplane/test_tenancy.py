import pytest
from django.apps import apps

from controlplane import celery_app, services
from controlplane.models import ApiKey, AuditEvent, Membership
from controlplane.tasks import TenantTask
from controlplane.tenancy import TenantManager, TenantModel, TenantScopeError, tenant_scope


def tenant_models():
    return [m for m in apps.get_models() if issubclass(m, TenantModel)]


def test_it_knows_the_tenant_models():
    assert {Membership, ApiKey, AuditEvent} <= set(tenant_models())


@pytest.mark.parametrize("model", tenant_models(), ids=lambda m: m.__name__)
def test_it_scopes_every_tenant_model(model):
    # The manager everyone reaches for filters by tenant; Django's internals do not.
    assert isinstance(model.objects, TenantManager)
    assert model._default_manager is model.all_tenants
    with pytest.raises(TenantScopeError):
        list(model.objects.all())


@pytest.mark.django_db
def test_it_never_shows_a_second_tenants_rows(acme, globex, make_key):
    make_key(acme, "read")
    make_key(globex, "read")
    for tenant, other in ((acme, globex), (globex, acme)):
        with tenant_scope(tenant):
            for model in (Membership, ApiKey, AuditEvent):
                rows = list(model.objects.all())
                assert rows, model
                assert {r.tenant_id for r in rows} == {tenant.id}
                assert not model.objects.filter(tenant=other).exists()
                assert (
                    model.objects.filter(pk__in=model.all_tenants.filter(tenant=other)).count() == 0
                )


@pytest.mark.django_db
def test_it_refuses_to_save_another_tenants_row_in_scope(acme, globex):
    key, _ = services.api_key_create(tenant=globex, name="k", scopes=["read"])
    with tenant_scope(acme), pytest.raises(TenantScopeError):
        key.name = "stolen"
        key.save()


@pytest.mark.django_db
def test_it_restores_the_outer_scope(acme, globex):
    with tenant_scope(acme):
        with tenant_scope(globex):
            assert {m.tenant_id for m in Membership.objects.all()} == {globex.id}
        assert {m.tenant_id for m in Membership.objects.all()} == {acme.id}
    with pytest.raises(TenantScopeError):
        Membership.objects.count()


@pytest.mark.django_db
def test_it_scopes_a_tenant_task_to_its_tenant_id(acme, globex):
    seen = []

    @celery_app.task(base=TenantTask, name="tests.probe", shared=False)
    def probe(*, tenant_id):
        seen.append({m.tenant_id for m in Membership.objects.all()})

    probe(tenant_id=globex.id)
    assert seen == [{globex.id}]
    with pytest.raises(TypeError, match="tenant_id"):
        probe()
