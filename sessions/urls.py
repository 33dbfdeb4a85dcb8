"""REST routes of sessions under /api."""

from rest_framework.routers import SimpleRouter

from sessions.apis import SessionViewSet


class OptionalSlashRouter(SimpleRouter):
    """Accept the contract's paths with or without a trailing slash."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("sessions", SessionViewSet, basename="session")

urlpatterns = router.urls
