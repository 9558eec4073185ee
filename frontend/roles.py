"""What a member's role lets them do in the UI: viewers read, members run, admins and
owners change settings.

The levels are the API's scopes (controlplane.models.ROLE_SCOPES), so the UI and the
API agree on who may do what. Templates hide the controls with `can_run` and
`can_admin`; views guard the POST with `@requires`, because a hidden button is not a
permission check.
"""

from functools import wraps

from controlplane.models import Scope

READ = Scope.READ
RUN = Scope.WRITE
CHANGE_SETTINGS = Scope.ADMIN

WHAT = {READ: "read this tenant", RUN: "run agents", CHANGE_SETTINGS: "change settings"}


def allows(membership, need: str) -> bool:
    return membership is not None and str(need) in membership.scopes


def requires(need: str):
    """Refuse unsafe methods (POST, ...) with 403 when the role is too low; reads pass.
    Goes under @tenant_view, which sets request.membership."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("GET", "HEAD", "OPTIONS") and not allows(
                request.membership, need
            ):
                return forbidden(request, need)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def forbidden(request, need: str):
    from frontend.render import render_page  # render_page reads this module's levels

    context = {"what": WHAT[need]}
    return render_page(request, "frontend/forbidden.html", context, status=403)
