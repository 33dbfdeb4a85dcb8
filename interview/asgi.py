"""The ASGI application: Django for HTTP, the collaboration consumer for WebSockets."""

import os

import django
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "interview.settings")
# What get_asgi_application() does, with the handler that serves sync views in one hop.
django.setup(set_prefix=False)

from interview.handler import PooledSyncASGIHandler  # noqa: E402

django_asgi_app = PooledSyncASGIHandler()

from collaboration.origins import OriginValidator  # noqa: E402
from collaboration.routing import websocket_urlpatterns  # noqa: E402
from interview.fastlane import FastLane  # noqa: E402
from interview.middleware import BodyLengthMiddleware, ForwardedClientMiddleware  # noqa: E402
from sessions import fast_lane  # noqa: E402

http_app = BodyLengthMiddleware(django_asgi_app)
if settings.FAST_LANE:
    http_app = FastLane(http_app, fast_lane.routes(django_asgi_app.executor))

application = ForwardedClientMiddleware(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": OriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)
