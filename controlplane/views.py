from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt

from controlplane.errors import is_api_path, json_error


def not_found(request, exception=None):
    if is_api_path(request.path):
        return json_error(404, "not_found", f"no such endpoint: {request.path}")
    return defaults.page_not_found(request, exception)


@csrf_exempt  # a POST to an unknown path is a 404, not a CSRF failure page
def api_not_found(request):
    return json_error(404, "not_found", f"no such endpoint: {request.path}")


def csrf_failure(request, reason=""):
    if is_api_path(request.path):
        return json_error(403, "csrf_failed", f"CSRF check failed: {reason}")
    return csrf.csrf_failure(request, reason=reason)


def server_error(request):
    if is_api_path(request.path):
        return json_error(500, "server_error", "internal error; it has been logged")
    return defaults.server_error(request)
