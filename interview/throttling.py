"""Rate limits per client address, scoped, with rates read from settings at request time."""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ScopedAddressThrottle(SimpleRateThrottle):
    """`RATE_LIMITS[scope]` requests per client address (e.g. "30/minute"); none if unset."""

    def __init__(self, scope: str):
        self.scope = scope
        super().__init__()

    def get_rate(self):
        return settings.RATE_LIMITS.get(self.scope)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttles_for(scope: str | None) -> list:
    return [ScopedAddressThrottle(scope)] if scope else []
