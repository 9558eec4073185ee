"""Every API error is JSON: {"error": <code>, "detail": <what was wrong>}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIXES = ("/api/", "/v1/")


def api_exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "invalid", "detail": exc.detail}
    else:
        code = exc.get_codes() if hasattr(exc, "get_codes") else "error"
        response.data = {
            "error": code if isinstance(code, str) else "error",
            "detail": exc.detail if hasattr(exc, "detail") else str(exc),
        }
    return response


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def json_error(status: int, error: str, detail) -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail}, status=status)
