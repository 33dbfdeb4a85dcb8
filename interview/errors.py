"""The one error shape of the API: `{error, message, statusCode, detail[, fields]}`."""

import logging

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from sessions.exceptions import SessionNotFound, VersionNotFound, VersionNotKept

logger = logging.getLogger(__name__)

# DRF's exception classes mapped to the codes clients see.
_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "MALFORMED_JSON",
    exceptions.ValidationError: "VALIDATION_ERROR",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.Throttled: "RATE_LIMIT_EXCEEDED",
    exceptions.NotAuthenticated: "UNAUTHORIZED",
    exceptions.AuthenticationFailed: "UNAUTHORIZED",
    exceptions.PermissionDenied: "FORBIDDEN",
}

_DEFAULT_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(exceptions.APIException):
    """An API error with an explicit code, e.g. `ApiError(404, "SESSION_NOT_FOUND", "...")`."""

    def __init__(self, status_code: int, code: str, message: str):
        self.status_code = status_code
        self.error_code = code
        super().__init__(detail=message, code=code)


def error_body(status_code: int, code: str, message: str, fields: dict | None = None) -> dict:
    """Build the error body every endpoint answers with."""
    body = {"error": code, "message": message, "statusCode": status_code, "detail": message}
    if fields is not None:
        body["fields"] = fields
    return body


def error_response(status_code: int, code: str, message: str, **kwargs) -> JsonResponse:
    """A plain Django response in the error shape, for code outside DRF."""
    return JsonResponse(error_body(status_code, code, message, **kwargs), status=status_code)


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [m for v in detail.values() for m in _flatten(v)]
    if isinstance(detail, list):
        return [m for v in detail for m in _flatten(v)]
    return [str(detail)]


def _fields(detail) -> dict[str, list[str]]:
    """Validation errors as `{field: [messages]}`; errors of the whole body under `body`."""
    if not isinstance(detail, dict):
        return {"body": _flatten(detail)}
    fields = {}
    for name, value in detail.items():
        key = "body" if name == "non_field_errors" else name
        fields[key] = _flatten(value)
    return fields


def api_exception_handler(exc, context):
    """DRF's exception handler, answering every error in the contract's shape."""
    if isinstance(exc, SessionNotFound):
        exc = ApiError(status.HTTP_404_NOT_FOUND, "SESSION_NOT_FOUND", exc.message)
    elif isinstance(exc, VersionNotFound):
        exc = ApiError(status.HTTP_404_NOT_FOUND, "VERSION_NOT_FOUND", str(exc))
    elif isinstance(exc, VersionNotKept):
        exc = ApiError(status.HTTP_410_GONE, "VERSION_NOT_KEPT", str(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable or refused the connection: nothing was changed (the
        # request's transaction is rolled back), and the client may try again.
        logger.error("Database unavailable in %s: %s", context.get("view"), str(exc).strip().splitlines()[:1])
        exc = ApiError(503, "SERVICE_UNAVAILABLE", "The database is unavailable; try again shortly.")
        exc.wait = 1

    if not isinstance(exc, exceptions.APIException):
        # Unexpected: log it and still answer in the contract's shape, never a bare 500.
        logger.exception("Unhandled error in %s", context.get("view"))
        set_rollback()
        return Response(error_body(500, "INTERNAL_ERROR", "Internal server error."), status=500)

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))

    code = getattr(exc, "error_code", None) or next(
        (c for cls, c in _CODES.items() if isinstance(exc, cls)),
        _DEFAULT_CODES.get(exc.status_code, "ERROR"),
    )
    if isinstance(exc, exceptions.ValidationError):
        fields = _fields(exc.detail)
        first = next(iter(fields.items()))
        message = f"Invalid input: {first[0]}: {first[1][0]}" if first[1] else "Invalid input."
        body = error_body(400, code, message, fields=fields)
    else:
        message = " ".join(_flatten(exc.detail)) or "Error."
        if isinstance(exc, exceptions.ParseError):
            message = "Malformed JSON in request body."
        body = error_body(exc.status_code, code, message)

    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


def handler400(request, exception=None):
    """Django-level 400 (e.g. a disallowed Host header) in the error shape."""
    return error_response(400, "BAD_REQUEST", "Bad request.")


def handler403(request, exception=None):
    """Django-level 403 in the error shape."""
    return error_response(403, "FORBIDDEN", "Forbidden.")


def handler404(request, exception=None):
    """Unknown URLs in the error shape."""
    return error_response(404, "NOT_FOUND", f"No route for {request.path}.")


def handler500(request):
    """Last resort for errors outside DRF: the error shape, not Django's HTML page."""
    return error_response(500, "INTERNAL_ERROR", "Internal server error.")
