"""Request-level guards and static files, usable from sync and async views alike.

Every middleware here works in both modes: a sync-only middleware in an ASGI stack makes
Django run the async views behind it through the one shared sync thread, so a program
running for 5 s in /api/execute would stall every other request.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from whitenoise.middleware import WhiteNoiseMiddleware

from interview.errors import error_response


class _DualMode:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return self.intercept(request) or self.get_response(request)

    async def __acall__(self, request):
        return self.intercept(request) or await self.get_response(request)

    def intercept(self, request):
        """A response that ends the request here, or None to go on."""
        raise NotImplementedError


class BodySizeLimitMiddleware(_DualMode):
    """Answer 413 in the error shape for a body over MAX_REQUEST_BODY_BYTES."""

    def intercept(self, request):
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
        return None


def _too_large(limit: int):
    return error_response(413, "PAYLOAD_TOO_LARGE", f"Request body is larger than the limit of {limit} bytes.")


class StaticFilesMiddleware(_DualMode, WhiteNoiseMiddleware):
    """WhiteNoise (admin CSS, offline Swagger UI and ReDoc) without forcing sync mode."""

    def __init__(self, get_response):
        WhiteNoiseMiddleware.__init__(self, get_response)
        _DualMode.__init__(self, get_response)

    def intercept(self, request):
        path = request.path_info
        static_file = self.find_file(path) if self.autorefresh else self.files.get(path)
        return self.serve(static_file, request) if static_file is not None else None
