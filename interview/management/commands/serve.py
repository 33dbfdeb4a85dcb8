"""`manage.py serve`: the production server (daphne) on HOST:PORT from the settings."""

import gc
import importlib

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with daphne on HOST:PORT (default 0.0.0.0:3000)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Interface to bind (default: HOST).")
        parser.add_argument("--port", type=int, default=None, help="Port to bind (default: PORT).")

    def handle(self, *args, host=None, port=None, **options):
        host = host or settings.SERVER_HOST
        port = port or settings.SERVER_PORT
        # Probe the sandbox and toolchains now, not on the first request, and say what we found.
        from execution.services import sandbox_report

        sandbox = sandbox_report()
        languages = ", ".join(name for name, tc in sandbox["languages"].items() if tc["available"]) or "none"
        if sandbox["usable"]:
            self.stdout.write(f"Code execution: {sandbox['mode']} sandbox, languages: {languages}")
        else:
            self.stdout.write(f"Code execution unavailable: {sandbox['reason']}")
        self.stdout.write(f"Serving on http://{host}:{port} (docs at /docs)")
        self.stdout.flush()
        _freeze_startup_objects()
        CommandLineInterface().run(
            [
                "--bind",
                host,
                "--port",
                str(port),
                "--proxy-headers",
                settings.ASGI_APPLICATION.replace(".application", ":application"),
            ]
        )


def _freeze_startup_objects() -> None:
    """Load the application now and move everything it made out of the collector's sight.

    A full collection walks every tracked object, and Django, Channels and Twisted make some
    100,000 at start: each full pass stopped every session for 100-200 ms on a busy 2-core
    machine, and a client sending large change lists makes such passes frequent. Frozen
    objects are never walked; they are the ones that live as long as the process anyway.
    """
    importlib.import_module(settings.ASGI_APPLICATION.rpartition(".")[0])
    gc.collect()
    gc.freeze()
