from django.views import defaults

from controlplane.errors import is_api_path, json_error


def not_found(request, exception=None):
    if is_api_path(request.path):
        return json_error(404, "not_found", f"no such endpoint: {request.path}")
    return defaults.page_not_found(request, exception)


def api_not_found(request):
    return json_error(404, "not_found", f"no such endpoint: {request.path}")


def server_error(request):
    if is_api_path(request.path):
        return json_error(500, "server_error", "internal error; it has been logged")
    return defaults.server_error(request)
