"""The ASGI application: Django for HTTP, the collaboration consumer for WebSockets."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "interview.settings")
django_asgi_app = get_asgi_application()

from collaboration.origins import OriginValidator  # noqa: E402
from collaboration.routing import websocket_urlpatterns  # noqa: E402
from interview.middleware import BodyLengthMiddleware, ForwardedClientMiddleware  # noqa: E402

application = ForwardedClientMiddleware(
    ProtocolTypeRouter(
        {
            "http": BodyLengthMiddleware(django_asgi_app),
            "websocket": OriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)
