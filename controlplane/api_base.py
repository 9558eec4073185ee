"""The base class of every tenant API view (kept apart from auth.py, which DRF's
settings import while rest_framework.views is still loading)."""

from django.utils.functional import cached_property
from rest_framework.permissions import SAFE_METHODS
from rest_framework.views import APIView

from controlplane import services
from controlplane.models import ApiKey, Scope
from controlplane.tenancy import _current_tenant_id


class TenantAPIView(APIView):
    """Base of every tenant API view: the handler runs scoped to the caller's tenant.

    `required_scope` names the scope needed; by default reads need `read` and writes
    need `write`. None means any authenticated caller of the tenant.
    """

    required_scope: str | None | dict = "default"

    def required_scope_for(self, request) -> str | None:
        if isinstance(self.required_scope, dict):
            return self.required_scope.get(request.method, Scope.WRITE)
        if self.required_scope == "default":
            return Scope.READ if request.method in SAFE_METHODS else Scope.WRITE
        return self.required_scope

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self._tenant_token = _current_tenant_id.set(request.tenant.pk)

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            token = getattr(self, "_tenant_token", None)
            if token is not None:
                _current_tenant_id.reset(token)
                self._tenant_token = None

    @cached_property
    def actor(self) -> services.Actor:
        request = self.request
        if isinstance(request.auth, ApiKey):
            return services.Actor(api_key=request.auth)
        return services.Actor(user=request.user)
