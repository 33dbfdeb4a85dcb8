"""WebSocket routes."""

from channels.security.websocket import WebsocketDenier
from django.urls import re_path

from collaboration.consumers import SessionConsumer

websocket_urlpatterns = [
    re_path(r"^ws/sessions/(?P<session_id>[^/]+)/?$", SessionConsumer.as_asgi()),
    # Any other path: refuse the handshake (daphne answers 403; it has no way to send a 404),
    # rather than let the router raise "No route found" (HTTP 500 and a traceback in the log).
    re_path(r"", WebsocketDenier.as_asgi()),
]
