"""What /health reports: each part of the service and whether it works."""

import os

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

# Other apps add checks here at start-up (name -> callable returning a dict with "ok").
EXTRA_CHECKS: dict = {}


def _database(connection) -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return {"ok": False, "status": "error", "error": str(exc).splitlines()[0] if str(exc) else "unreachable"}
    return {"ok": True, "status": "ok", "vendor": connection.vendor}


_redis_client = None


def _channel_layer() -> dict:
    """Whether this process reaches the other processes' clients: Redis answers a ping
    (required: without it edits reach no other process), or the in-memory layer."""
    if not settings.REDIS_URL:
        return {"ok": True, "backend": "in-memory"}
    global _redis_client
    import redis

    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        _redis_client.ping()
    except redis.RedisError as exc:
        return {"ok": False, "required": True, "backend": "redis", "error": str(exc).splitlines()[0] or "unreachable"}
    return {"ok": True, "backend": "redis"}


def server(connection) -> dict:
    """Which process answered, and what it runs on."""
    return {
        "workers": settings.SERVER_WORKERS,
        "worker": settings.WORKER_INDEX or None,
        "pid": os.getpid(),
        "channelLayer": "redis" if settings.REDIS_URL else "in-memory",
        "database": connection.vendor,
    }


def report(connection) -> dict:
    """The health answer; `status` is unhealthy when a check that must pass does not."""
    checks = {"database": _database(connection), "channelLayer": _channel_layer()}
    for name, check in EXTRA_CHECKS.items():
        checks[name] = check()
    healthy = all(c.get("ok", True) or not c.get("required", name == "database") for name, c in checks.items())
    return {
        "status": "healthy" if healthy else "unhealthy",
        "version": settings.APP_VERSION,
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        "server": server(connection),
        "checks": checks,
    }
