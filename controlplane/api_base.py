"""The base classes of tenant API views (kept apart from auth.py, which DRF's
settings import while rest_framework.views is still loading)."""

from django.http import Http404
from django.utils.functional import cached_property
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.exceptions import APIException
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import services
from controlplane.models import ApiKey, Scope
from controlplane.parsers import JSONParser
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


def or_404(row):
    """The row a selector found, or a 404: another tenant's row is not there."""
    if row is None:
        raise Http404
    return row


class Invalid(APIException):
    """A 400 whose detail says what was wrong (a service's refusal, a bad filter)."""

    status_code = 400
    default_code = "invalid"


# A tenant's collection: GET renders `rows()`, POST creates one row. A subclass names
# `serializer_class` (renders a row), `input_serializer_class` (parses the body; the row's
# serializer by default) and, when the answer differs from a row,
# `created_serializer_class` and `created_status`; it implements `rows()` (a selector)
# and `create()` (a service). A ServiceError from the service is a 400.
# `@list_create_schema(...)` on the subclass documents both methods. (Comments, not a
# docstring: drf-spectacular would show it as every operation's description.)
class TenantListCreateView(TenantAPIView):
    parser_classes = [JSONParser]
    serializer_class: type
    input_serializer_class: type | None = None
    created_serializer_class: type | None = None
    created_status = 201

    def rows(self, request, **kwargs):
        raise NotImplementedError

    def create(self, request, data: dict, **kwargs):
        raise NotImplementedError

    def get(self, request, **kwargs):
        return Response(self.serializer_class(self.rows(request, **kwargs), many=True).data)

    def post(self, request, **kwargs):
        body = (self.input_serializer_class or self.serializer_class)(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            created = self.create(request, body.validated_data, **kwargs)
        except services.ServiceError as exc:
            raise Invalid(str(exc)) from None
        rendered = (self.created_serializer_class or self.serializer_class)(created)
        return Response(rendered.data, status=self.created_status)


def list_create_schema(*, list_summary: str, create_summary: str | None, parameters=()):
    """The OpenAPI description of a TenantListCreateView, from its serializers: only the
    summaries (and GET's query parameters) differ from one collection to the next.
    Without `create_summary` the view documents its own POST."""

    def document(view):
        methods = {
            "get": extend_schema(
                summary=list_summary,
                parameters=list(parameters),
                responses=view.serializer_class(many=True),
            )
        }
        if create_summary is not None:
            created = view.created_serializer_class or view.serializer_class
            methods["post"] = extend_schema(
                summary=create_summary,
                request=view.input_serializer_class or view.serializer_class,
                responses={view.created_status: created},
            )
        return extend_schema_view(**methods)(view)

    return document
