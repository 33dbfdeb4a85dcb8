"""Rate limits per client address, scoped, with rates read from settings at request time."""

import logging
import math
import time

from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.throttling import SimpleRateThrottle

from interview.fastlane import COUNTED

logger = logging.getLogger(__name__)

# Where the counters go while the shared cache (Redis) is unreachable: this process's
# memory, so the limits still hold per process instead of failing every limited request.
_fallback = LocMemCache("throttle-fallback", {})
_warned_at = 0.0


def _cache_errors() -> tuple[type[BaseException], ...]:
    try:
        import redis
    except ImportError:  # no Redis client installed: only the local-memory cache is in use
        return (OSError,)
    return (redis.RedisError, OSError)


_CACHE_ERRORS = _cache_errors()


class ScopedAddressThrottle(SimpleRateThrottle):
    """`RATE_LIMITS[scope]` requests per client address (e.g. "30/minute"); none if unset.

    A sliding window counted in O(1): two counters, this fixed window's and the previous
    one's, the previous weighted by how much of it the sliding window still covers. DRF's
    own throttle keeps a timestamp per request in the cache, which the local-memory cache
    pickles on every read and write: at a generous limit (thousands a minute) that list made
    every limited request cost more than its view. Counters are `cache.incr`, atomic in the
    local-memory cache and in Redis.
    """

    timer = time.time

    def __init__(self, scope: str):
        self.scope = scope
        super().__init__()

    def get_rate(self):
        return settings.RATE_LIMITS.get(self.scope)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        edge = getattr(request, "scope", None)
        if edge is not None and self.scope in edge.get(COUNTED, ()):
            return True  # the fast lane counted this request before it handed it on
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        try:
            return self._count(self.cache, key)
        except _CACHE_ERRORS as exc:
            global _warned_at
            if time.monotonic() - _warned_at > 60:
                _warned_at = time.monotonic()
                logger.error("The rate-limit cache is unreachable (%s); counting in this process meanwhile", exc)
            return self._count(_fallback, key)

    def _count(self, cache, key: str) -> bool:
        now = self.timer()
        window = math.floor(now / self.duration)
        current_key, previous_key = f"{key}:{window}", f"{key}:{window - 1}"
        counts = cache.get_many([current_key, previous_key])
        current, previous = counts.get(current_key, 0), counts.get(previous_key, 0)
        elapsed = now / self.duration - window  # of this window, 0 to 1
        if previous * (1 - elapsed) + current >= self.num_requests:
            self._wait = self._seconds_until_allowed(previous, current, elapsed)
            return False
        # The key lives as long as it is some window's previous one.
        if not cache.add(current_key, 1, timeout=2 * self.duration + 1):
            try:
                cache.incr(current_key)
            except ValueError:  # expired between add and incr
                cache.add(current_key, 1, timeout=2 * self.duration + 1)
        return True

    def _seconds_until_allowed(self, previous: int, current: int, elapsed: float) -> float:
        """When the weighted count drops below the limit, if nothing more is counted."""
        n = self.num_requests
        if current < n:  # within this window, once enough of the previous one has slid out
            return self.duration * (1 - (n - current) / previous - elapsed)
        # In the next window this one is the previous one, weighted down as it slides out.
        return self.duration * (1 - elapsed) + self.duration * (1 - (n - 1) / current)

    def wait(self):
        return max(0.0, self._wait)


def throttles_for(scope: str | None) -> list:
    return [ScopedAddressThrottle(scope)] if scope else []
