"""Tenant scoping that fails closed.

Every model holding a tenant's data inherits TenantModel. Its `objects` manager filters
by the tenant in the current scope and raises TenantScopeError when there is none, so
forgetting the tenant is an exception, not a leak. Cross-tenant reads are spelled
`.unscoped()`, which keeps them easy to find.
"""

from contextlib import contextmanager
from contextvars import ContextVar

from django.db import models

_current_tenant_id: ContextVar[int | None] = ContextVar("flightdeck_tenant_id", default=None)


class TenantScopeError(RuntimeError):
    """A tenant-scoped query ran with no tenant in scope."""


def current_tenant_id() -> int:
    tenant_id = _current_tenant_id.get()
    if tenant_id is None:
        raise TenantScopeError("no tenant in scope: wrap the code in tenant_scope(tenant)")
    return tenant_id


def current_tenant_id_or_none() -> int | None:
    return _current_tenant_id.get()


@contextmanager
def tenant_scope(tenant):
    """Scope the block to one tenant (a Tenant or its id)."""
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    if tenant_id is None:
        raise TenantScopeError("tenant_scope needs a saved tenant")
    token = _current_tenant_id.set(tenant_id)
    try:
        yield tenant
    finally:
        _current_tenant_id.reset(token)


class TenantQuerySet(models.QuerySet):
    pass


class TenantManager(models.Manager.from_queryset(TenantQuerySet)):
    def get_queryset(self):
        return super().get_queryset().filter(tenant_id=current_tenant_id())

    def unscoped(self):
        """Every tenant's rows. Only for platform jobs that really span tenants."""
        return super().get_queryset()


class TenantModel(models.Model):
    tenant = models.ForeignKey("controlplane.Tenant", on_delete=models.CASCADE)

    objects = TenantManager()
    all_tenants = models.Manager()  # admin, migrations, factories

    class Meta:
        abstract = True
        # Django's internals (related managers, admin, deletion) stay unfiltered.
        default_manager_name = "all_tenants"

    def save(self, *args, **kwargs):
        scoped = _current_tenant_id.get()
        if scoped is not None and self.tenant_id is not None and self.tenant_id != scoped:
            raise TenantScopeError(
                f"refusing to save a row of tenant {self.tenant_id} inside tenant {scoped}'s scope"
            )
        super().save(*args, **kwargs)
