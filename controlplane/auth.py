"""How an API request finds its caller, its tenant and what it may do.

A request carries either an API key (`Authorization: Bearer fd_...`, the tenant is the
key's) or a logged-in session (the tenant is the user's current one). Either way the
permission check below sets `request.tenant` and `request.scopes`, and TenantAPIView
(api_base.py) runs the handler inside that tenant's scope.
"""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission

from controlplane import selectors, services, throttle
from controlplane.models import ApiKey, Scope

SESSION_TENANT_KEY = "flightdeck_tenant_id"


class ApiKeyPrincipal:
    """request.user for a request made with an API key."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self):
        return f"api-key:{self.api_key.prefix}"


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        token = bearer_token(header)
        if token is None:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'")
        attempt = throttle.api_key_attempt(throttle.client_address(request.META), token)
        try:
            key = services.api_key_authenticate(raw_key=token, before_read=attempt.check)
        except throttle.Throttled as exc:
            raise exceptions.Throttled(wait=exc.retry_after, detail=str(exc)) from None
        if key is None:
            attempt.failed()
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return 'Bearer realm="flightdeck"'


class TenantSessionAuthentication(SessionAuthentication):
    """A logged-in person using the API from the browser (CSRF enforced)."""


def session_tenant(request):
    """The logged-in user's current tenant and membership, or (None, None)."""
    memberships = selectors.tenants_for_user(user=request.user)
    if not memberships:
        return None, None
    wanted = request.session.get(SESSION_TENANT_KEY)
    for membership in memberships:
        if membership.tenant_id == wanted:
            return membership.tenant, membership
    return memberships[0].tenant, memberships[0]


class HasTenantScope(BasePermission):
    """Resolves the tenant and checks the scope the view asks for (403 when missing)."""

    def has_permission(self, request, view):
        if request.auth is not None and isinstance(request.auth, ApiKey):
            request.tenant = request.auth.tenant
            request.scopes = set(request.auth.scopes)
        elif request.user is not None and request.user.is_authenticated:
            tenant, membership = session_tenant(request._request)
            if tenant is None:
                self.message = "you are not a member of any tenant"
                return False
            request.tenant = tenant
            request.scopes = membership.scopes
        else:
            return False
        needed = view.required_scope_for(request)
        if needed is None:
            return True
        # The admin scope includes all others.
        if needed in request.scopes or Scope.ADMIN in request.scopes:
            return True
        self.message = f"this needs the {str(needed)!r} scope"
        return False
