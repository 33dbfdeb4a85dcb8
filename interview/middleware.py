"""Request-level guards and static files, usable from sync and async views alike, and the
ASGI wrappers that fix what reaches Django: the client address and bodies without a length.

Every middleware here works in both modes: a sync-only middleware in an ASGI stack makes
Django run the async views behind it through the one shared sync thread, so a program
running for 5 s in /api/execute would stall every other request.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
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
            # No length given (chunked): under daphne BodyLengthMiddleware has set one already;
            # elsewhere, reading the body enforces the same limit.
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


def cookies_unused(request) -> bool:
    """An API request other than DELETE or notes: it authenticates nobody by cookie and shows
    no message.

    The owner-only calls (DELETE, a session's notes) take a staff user instead of the token:
    their check reads the admin login (the session) and demands CSRF; everything outside
    /api/ (the admin, the docs, the replay page) may use either."""
    path = request.path_info
    return path.startswith("/api/") and request.method != "DELETE" and not path.rstrip("/").endswith("/notes")


class _ForCookieUsers:
    """Run the middleware only for requests that may use cookies; the API's skip it.

    In sync and async mode alike: `get_response` answers what the chain behind it answers."""

    def __call__(self, request):
        if cookies_unused(request):
            return self.get_response(request)
        return super().__call__(request)


class CookieSessionMiddleware(_ForCookieUsers, SessionMiddleware):
    pass


class CookieAuthenticationMiddleware(_ForCookieUsers, AuthenticationMiddleware):
    pass


class CookieMessageMiddleware(_ForCookieUsers, MessageMiddleware):
    pass


# --- ASGI wrappers --------------------------------------------------------------------------


def forwarded_client(x_forwarded_for: str, num_proxies: int) -> str | None:
    """The address the outermost of `num_proxies` proxies saw, as DRF's throttles read it.

    Each proxy appends the address it received from, so the entry `num_proxies` from the end
    is the client as the first trusted proxy saw it; everything left of it is client-written.
    """
    hops = [hop.strip() for hop in x_forwarded_for.split(",") if hop.strip()]
    if num_proxies <= 0 or not hops:
        return None
    return hops[-min(num_proxies, len(hops))]


class ForwardedClientMiddleware:
    """Set `scope["client"]` (REMOTE_ADDR, the WebSocket's peer) from X-Forwarded-For, but
    only behind NUM_PROXIES > 0 proxies and only from the hops they added."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        num_proxies = settings.NUM_PROXIES
        if num_proxies > 0 and scope["type"] in ("http", "websocket"):
            values = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
            address = forwarded_client(",".join(values), num_proxies)
            if address is not None:
                scope = {**scope, "client": [address, 0]}
        return await self.application(scope, receive, send)


class BodyLengthMiddleware:
    """Give a body sent without Content-Length (`Transfer-Encoding: chunked`) its length.

    daphne decodes the chunks and passes the body on, and Django would read it, but DRF's
    request takes a missing CONTENT_LENGTH for "no body": a view would silently see `{}`.
    The body is read here up to MAX_REQUEST_BODY_BYTES (one byte more tells it is over, and
    then BodySizeLimitMiddleware answers 413 from the length, the rest never read).
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _needs_length(scope["headers"]):
            return await self.application(scope, receive, send)
        limit = settings.MAX_REQUEST_BODY_BYTES
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit or not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = [*scope["headers"], (b"content-length", str(len(body)).encode())]
        return await self.application({**scope, "headers": headers}, replayed_body(body, receive), send)


def replayed_body(body: bytes, receive):
    """An ASGI `receive` that gives the body already read, then the client's own messages."""
    replayed = False

    async def receive_body():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_body


def _needs_length(headers) -> bool:
    names = {name for name, _ in headers}
    return b"transfer-encoding" in names and b"content-length" not in names
