"""Request-level guards that run before any view: the body size limit."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig

from interview.errors import error_response


class BodySizeLimitMiddleware:
    """Answer 413 in the error shape for a body over MAX_REQUEST_BODY_BYTES."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.MAX_REQUEST_BODY_BYTES
        raw = request.META.get("CONTENT_LENGTH")
        if raw:
            try:
                length = int(raw)
            except ValueError:
                return error_response(400, "BAD_REQUEST", "Invalid Content-Length header.")
            if length > limit:
                return _too_large(limit)
        elif request.method in ("POST", "PUT", "PATCH", "DELETE"):
            # No length given (chunked): reading the body enforces the same limit.
            try:
                request.body  # noqa: B018
            except RequestDataTooBig:
                return _too_large(limit)
        return self.get_response(request)


def _too_large(limit: int):
    return error_response(413, "PAYLOAD_TOO_LARGE", f"Request body is larger than the limit of {limit} bytes.")
