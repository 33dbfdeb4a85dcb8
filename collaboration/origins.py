"""WebSocket origin check against the CORS origin list (Channels' own check is host-based)."""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings


def _host(value: str) -> str | None:
    try:
        return (urlsplit(value).hostname or "").lower() or None
    except ValueError:
        return None


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """No Origin (not a browser), a CORS origin's host on any port, or the server's own host."""
    if origin is None:
        return True
    host = _host(origin)
    if host is None:
        return False
    allowed = {_host(o) for o in settings.CORS_ORIGINS}
    if host_header:
        allowed.add(_host(f"http://{host_header}"))
    return host in allowed


class OriginValidator:
    """ASGI middleware refusing WebSocket handshakes from browser origins not allowed."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            host = headers.get(b"host")
            if not origin_allowed(
                origin.decode("latin-1") if origin is not None else None,
                host.decode("latin-1") if host is not None else None,
            ):
                return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
