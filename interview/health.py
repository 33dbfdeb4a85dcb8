"""What /health reports: each part of the service and whether it works."""

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


def report(connection) -> dict:
    """The health answer; `status` is unhealthy when a check that must pass does not."""
    checks = {"database": _database(connection)}
    for name, check in EXTRA_CHECKS.items():
        checks[name] = check()
    healthy = all(c.get("ok", True) or not c.get("required", name == "database") for name, c in checks.items())
    return {
        "status": "healthy" if healthy else "unhealthy",
        "version": settings.APP_VERSION,
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        "checks": checks,
    }
