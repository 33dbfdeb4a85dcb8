"""The fast lane: the hottest REST requests answered at the ASGI edge, with Django's own answer.

Reading a session's code is most of what clients ask (70% of the REST mix that
`../shared/bench/compare.sh rest` drives; saves are 20%, creates 10%). Through Django a
150 µs piece of work (a one-row read and its JSON) cost about 1 ms of CPU: the request
object, a hop to a sync thread, ten middlewares, DRF's dispatch (negotiation,
permissions, throttles) and the response's way back. Here the routes an app registers
(`sessions.fast_lane`) are answered without those, but only when the answer is certain to
be the one Django would give:

- The request is plain: the route's method, no query string, no script prefix; no body
  for a read; for a write a JSON body (Content-Type `application/json`, UTF-8) with its
  length given and within MAX_REQUEST_BODY_BYTES. Anything else (HEAD, `?version=N`, a
  chunked body, a form) goes to Django.
- The response headers are Django's own, learned: the first request with a given set of
  headers goes through Django, and if Django answers the route's success status, the
  headers of that answer (all but Content-Length) are kept for requests with the same
  headers; never an answer with a header that belongs to one answer only (`_PER_ANSWER`:
  a cookie, an ETag, ...). Whatever the middleware chain decides from the request (the
  allowed hosts, CORS for the Origin, the security headers, DRF's Allow and content
  negotiation from Accept) is therefore decided by Django, once per set of headers. A
  request's headers all count but those no part of the chain reads (`_IGNORED`); at most
  `FAST_LANE_TEMPLATES` sets are kept, the least recently used dropped first, so a client
  varying its headers only sends its requests the usual way.
- The body comes from the route's `answer`, which does what the view does with the
  view's own parts (serializers, parser, renderer, rate limits, services; tested against
  Django's answers byte for byte and for what they change). When the view would answer
  anything but its success (an unknown or expired session, a body that does not
  validate, a limit reached) `answer` changes nothing and says None, and Django answers
  from the start, with the error in the contract's shape. A rate limit `answer` counted
  is not counted again by Django (`COUNTED` in the scope).

What the fast lane skips has no effect on these answers: the request signals (the work
runs through `database_sync_to_async`, which closes stale connections as they do) and
Django's request log (it logs only errors).
"""

import logging
import re
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings

from interview import health
from interview.middleware import replayed_body

logger = logging.getLogger(__name__)

# Request headers that no middleware, nor DRF, reads on these routes: they do not make
# the answer differ, so requests that differ only in them share a set of learned headers.
_IGNORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"accept-encoding",  # no compressing middleware
        b"accept-language",  # no locale middleware
        b"cookie",  # the cookie middlewares skip API paths; the API authenticates no one
        b"referer",
        b"cache-control",
        b"pragma",
        b"priority",
        b"dnt",
        b"if-none-match",  # no conditional-GET middleware
        b"if-modified-since",
        b"sec-fetch-site",
        b"sec-fetch-mode",
        b"sec-fetch-dest",
        b"sec-ch-ua",
        b"sec-ch-ua-mobile",
        b"sec-ch-ua-platform",
        b"x-forwarded-for",  # ForwardedClientMiddleware has read it already; no throttle here
        b"x-real-ip",
    }
)
_BODY_HEADERS = (b"content-length", b"transfer-encoding")
# Response headers that belong to one answer, not to every answer of a route: a response
# with one of them is never learned (should a view add an ETag one day, say).
_PER_ANSWER = frozenset(
    {b"set-cookie", b"etag", b"last-modified", b"expires", b"age", b"location", b"retry-after", b"content-range"}
)


@dataclass(frozen=True)
class Route:
    """A request the fast lane answers: `method` and `pattern` (the whole path, one group,
    the value `answer` is given); `answer` returns the body of Django's `status` answer, or
    None for "ask Django", which it may say (or raise) only if it changed nothing (but what
    it notes in `EdgeRequest.counted`). With `body`, the route takes a JSON body (at most
    MAX_REQUEST_BODY_BYTES, with its length given), read here and replayed to Django."""

    name: str
    method: str
    pattern: re.Pattern
    answer: Callable[[str, "EdgeRequest"], Awaitable[bytes | None]]
    status: int = 200
    body: bool = False


class EdgeRequest:
    """What a route's `answer` gets: the ASGI scope, the body, and the rate-limit scopes it
    has counted this request against (Django, if the request goes on to it, counts those
    no more: see `interview.throttling`)."""

    __slots__ = ("body", "counted", "scope")

    def __init__(self, scope: dict, body: bytes):
        self.scope = scope
        self.body = body
        self.counted: set[str] = set()

    @property
    def META(self) -> dict:
        """What DRF's throttles read of a request (`get_ident`), as Django would set it."""
        client = self.scope.get("client")
        return {"REMOTE_ADDR": client[0] if client else None}

    @property
    def headers(self) -> dict:
        """The headers DRF's throttles read, repeated ones joined with commas as Django joins them."""
        forwarded = [value.decode("latin-1") for name, value in self.scope["headers"] if name == b"x-forwarded-for"]
        return {"x-forwarded-for": ",".join(forwarded)} if forwarded else {}


# The scope key by which Django's side learns what the fast lane counted already.
COUNTED = "fast_lane.counted"


class FastLane:
    """ASGI middleware: `routes` answered here when their answer is certain, the rest by `app`."""

    def __init__(self, app, routes: list[Route], *, templates: int | None = None):
        self.app = app
        self.routes = routes
        self.limit = settings.FAST_LANE_TEMPLATES if templates is None else templates
        self.ignored = _IGNORED if settings.DISALLOWED_USER_AGENTS else _IGNORED | {b"user-agent"}
        # (route name, request key) -> the response headers Django gave, in its order, and
        # the place of its Content-Length among them.
        self.templates: OrderedDict[tuple, tuple[list, int]] = OrderedDict()
        self.served = 0  # answered here (in /health)
        _lanes.add(self)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not scope.get("query_string"):
            method = scope["method"]
            for route in self.routes:
                if route.method == method:
                    match = route.pattern.fullmatch(scope["path"])
                    if match is not None:
                        return await self.serve(route, match.group(1), scope, receive, send)
        return await self.app(scope, receive, send)

    def request_key(self, scope, route: Route) -> tuple | None:
        """What of the request can make Django's headers differ; None if the fast lane must
        not answer it (a body where the route takes none, a body without a length or over
        the limit, a JSON body of another charset, a script prefix)."""
        if scope.get("root_path"):
            return None
        headers = []
        length = content_type = None
        for name, value in scope["headers"]:
            if name in _BODY_HEADERS:
                if name == b"transfer-encoding" or length is not None:
                    return None
                length = value.strip()
            elif name not in self.ignored:
                if name == b"content-type":
                    content_type = value
                headers.append((name, value))
        if route.body:
            # Without a JSON Content-Type DRF reads no body at all (or refuses it): Django's way.
            if content_type not in _JSON_TYPES:
                return None
            if not length or not length.isdigit() or int(length) > settings.MAX_REQUEST_BODY_BYTES:
                return None
        elif length not in (None, b"", b"0"):
            return None
        server = scope.get("server")
        return scope.get("scheme", "http"), tuple(server) if server else None, tuple(headers)

    async def serve(self, route: Route, value: str, scope, receive, send):
        key = self.request_key(scope, route)
        if key is None:
            return await self.app(scope, receive, send)
        slot = (route.name, key)
        template = self.templates.get(slot)
        if template is None:
            return await self.app(scope, receive, self.learning(slot, route.status, send))
        body = b""
        if route.body:
            body = await _read_body(receive)
            if body is None:
                return None  # the client went away
        request = EdgeRequest(scope, body)
        try:
            answer = await route.answer(value, request)
        except Exception:
            # A database that fails, say: Django tries again and answers in the contract's
            # shape. A route raises only before it has changed anything (a write's
            # transaction rolled back), so trying again loses and doubles nothing.
            logger.exception("The fast lane could not answer %s %s; Django answers it", scope["method"], scope["path"])
            answer = None
        if answer is None:
            scope = {**scope, COUNTED: frozenset(request.counted)} if request.counted else scope
            return await self.app(scope, replayed_body(body, receive) if route.body else receive, send)
        self.templates.move_to_end(slot)
        self.served += 1
        headers, length_at = template
        headers = headers.copy()
        headers[length_at] = (headers[length_at][0], str(len(answer)).encode())
        await send({"type": "http.response.start", "status": route.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return None

    def learning(self, slot: tuple, status: int, send):
        """`send`, keeping the headers of the route's answer for the requests like this one."""

        async def send_and_learn(message):
            if message["type"] == "http.response.start" and message["status"] == status:
                headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
                names = [name.lower() for name, _ in headers]
                if _PER_ANSWER.isdisjoint(names) and names.count(b"content-length") == 1:
                    self.remember(slot, (headers, names.index(b"content-length")))
            await send(message)

        return send_and_learn

    def remember(self, slot: tuple, template: tuple[list, int]) -> None:
        if self.limit <= 0:
            return
        self.templates[slot] = template
        self.templates.move_to_end(slot)
        while len(self.templates) > self.limit:
            self.templates.popitem(last=False)


_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")


async def _read_body(receive) -> bytes | None:
    """The whole body (its length is checked against the limit already), or None if the
    client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


_lanes: weakref.WeakSet = weakref.WeakSet()


def report() -> dict:
    """/health's `checks.http`: what the fast lane has answered and the header sets it keeps."""
    lanes = list(_lanes)
    return {
        "ok": True,
        "fastLane": {
            "enabled": bool(settings.FAST_LANE),
            "served": sum(lane.served for lane in lanes),
            "headerSets": sum(len(lane.templates) for lane in lanes),
        },
    }


health.EXTRA_CHECKS["http"] = report
