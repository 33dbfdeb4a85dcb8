"""The execution app: running candidate code in a sandbox."""

from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from execution.services import sandbox_report
        from interview import health

        health.EXTRA_CHECKS["sandbox"] = sandbox_report
