"""Celery plumbing shared by every app's tasks."""

from celery import Task

from controlplane.tenancy import tenant_scope


class TenantTask(Task):
    """Runs the task body scoped to its `tenant_id` keyword argument."""

    abstract = True

    def __call__(self, *args, **kwargs):
        tenant_id = kwargs.get("tenant_id")
        if tenant_id is None:
            raise TypeError(f"{self.name} is a tenant task and needs tenant_id=")
        with tenant_scope(int(tenant_id)):
            return super().__call__(*args, **kwargs)
