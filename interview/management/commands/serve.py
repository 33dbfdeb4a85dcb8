"""`manage.py serve`: the production server (daphne) on HOST:PORT from the settings."""

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
        self.stdout.write(f"Serving on http://{host}:{port} (docs at /docs)")
        self.stdout.flush()
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
