"""How a UI view finds its tenant: from the URL, checked against the user's memberships."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import Http404

from controlplane.auth import SESSION_TENANT_KEY
from controlplane.models import Tenant
from controlplane.selectors import membership_for
from controlplane.tenancy import tenant_scope


def is_partial(request) -> bool:
    """An htmx request for a fragment (a boosted link wants the whole page)."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-Boosted")


def found_or_404(value, what: str):
    """`value`, or a 404 when a selector found nothing (another tenant's row included)."""
    if value is None:
        raise Http404(f"no such {what}")
    return value


def tenant_view(view):
    """Reads `tenant_slug` from the URL, checks membership, sets request.tenant and
    request.membership and runs the view inside tenant_scope(). A tenant the user does
    not belong to is a 404, like one that does not exist."""

    @wraps(view)
    @login_required
    def wrapper(request, tenant_slug, *args, **kwargs):
        tenant = Tenant.objects.filter(slug=tenant_slug, is_active=True).first()
        membership = membership_for(user=request.user, tenant=tenant) if tenant else None
        if membership is None:
            raise Http404("no such tenant")
        request.tenant = tenant
        request.membership = membership
        # The API's session authentication follows the tenant last opened in the UI.
        if request.session.get(SESSION_TENANT_KEY) != tenant.pk:
            request.session[SESSION_TENANT_KEY] = tenant.pk
        with tenant_scope(tenant):
            return view(request, tenant_slug, *args, **kwargs)

    return wrapper
