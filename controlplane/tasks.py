"""Celery plumbing shared by every app's tasks."""

from celery.contrib.django.task import DjangoTask

from controlplane.tenancy import tenant_scope


class TenantTask(DjangoTask):
    """Runs the task body scoped to its `tenant_id` keyword argument.

    DjangoTask gives `delay_on_commit`/`apply_async_on_commit` (a plain Task has neither).
    """

    abstract = True

    def __call__(self, *args, **kwargs):
        tenant_id = kwargs.get("tenant_id")
        if tenant_id is None:
            raise TypeError(f"{self.name} is a tenant task and needs tenant_id=")
        with tenant_scope(int(tenant_id)):
            return super().__call__(*args, **kwargs)
