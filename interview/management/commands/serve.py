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
        CommandLineInterface().run(
            [
                "--bind",
                host,
                "--port",
                str(port),
                # No --proxy-headers: daphne would take the client-written first entry of
                # X-Forwarded-For as the peer. ForwardedClientMiddleware trusts NUM_PROXIES hops.
                # Frames are read up to WS_MAX_FRAME_BYTES, so one over WS_MAX_MESSAGE_BYTES
                # reaches the consumer and is answered INVALID_MESSAGE instead of cut off.
                "--websocket-max-message-size",
                str(settings.WS_MAX_FRAME_BYTES),
                "--websocket-max-frame-size",
                str(settings.WS_MAX_FRAME_BYTES),
                settings.ASGI_APPLICATION.replace(".application", ":application"),
            ]
        )
