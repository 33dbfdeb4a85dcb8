"""`manage.py serve`: the production server (daphne) on HOST:PORT from the settings."""

import argparse
import asyncio
import gc
import importlib
import logging
import pprint
import signal
import time
from pathlib import Path

from autobahn.websocket.protocol import PreparedMessage
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from twisted.internet import tcp

from collaboration.inbox import SOCKET_EXTENSION
from interview.workers import Supervisor

logger = logging.getLogger("interview.serve")

# RFC 6455 "Try Again Later": the client reconnects and gets the current document in `welcome`.
CLOSE_TOO_FAR_BEHIND = 1013
# How long a connection closed for falling behind may take to let its close frame through.
ABORT_AFTER_SECONDS = 1.0
# RFC 6455 "Service Restart": sent to every WebSocket when the server stops; clients reconnect.
CLOSE_SERVICE_RESTART = 1012
# On SIGTERM: how long the changes in flight may take to commit, and the clients to answer
# the close, before the server stops anyway.
DRAIN_COMMIT_SECONDS = 10.0
DRAIN_CLOSE_SECONDS = 5.0


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with daphne on HOST:PORT (default 0.0.0.0:3000)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Interface to bind (default: HOST).")
        parser.add_argument("--port", type=int, default=None, help="Port to bind (default: PORT).")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Server processes on the one socket (default: WORKERS, 1); more than 1 needs REDIS_URL.",
        )
        # How the parent of `--workers` hands each worker the socket: not for users.
        parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args, host=None, port=None, workers=None, fd=None, **options):
        host = host or settings.SERVER_HOST
        port = port or settings.SERVER_PORT
        count = workers if workers is not None else settings.SERVER_WORKERS
        if fd is None:
            _check_configuration(count)
        if fd is None and count > 1:
            self.report_sandbox()
            manage_py = Path(settings.BASE_DIR) / "manage.py"
            supervisor = Supervisor(host=host, port=port, workers=count, manage_py=manage_py, out=self.stdout)
            raise SystemExit(supervisor.run())
        if fd is None:
            self.report_sandbox()
            self.stdout.write(f"Serving on http://{host}:{port} (docs at /docs)")
            bind = ["--bind", host, "--port", str(port)]
        else:
            bind = ["--fd", str(fd)]
        self.stdout.flush()
        _freeze_startup_objects()
        _lazy_autobahn_debug_arguments()
        _requests_without_form_parsing()
        BoundedCommandLineInterface().run(
            [
                *bind,
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

    def report_sandbox(self) -> None:
        """Probe the sandbox and toolchains now, not on the first request, and say what we found."""
        from execution.services import sandbox_report

        sandbox = sandbox_report()
        languages = ", ".join(name for name, tc in sandbox["languages"].items() if tc["available"]) or "none"
        if sandbox["usable"]:
            self.stdout.write(f"Code execution: {sandbox['mode']} sandbox, languages: {languages}")
        else:
            self.stdout.write(f"Code execution unavailable: {sandbox['reason']}")


def _check_configuration(count: int) -> None:
    """Refuse to start, with a sentence saying why, on what would only fail later."""
    if count < 1:
        raise CommandError(f"--workers must be at least 1 (got {count}).")
    if count > 1 and not settings.REDIS_URL:
        raise CommandError(
            f"{count} workers need REDIS_URL: with the in-memory channel layer a worker cannot reach"
            " the clients of another, so edits would not reach everyone. Set REDIS_URL (for example"
            " redis://127.0.0.1:6379/0) or run one worker."
        )
    from django.db import DatabaseError, connection

    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        raise CommandError(f"The database is unreachable ({_first_line(exc)}); check DATABASE_URL.") from exc
    finally:
        connection.close()
    if settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=5).ping()
        except redis.RedisError as exc:
            raise CommandError(f"Redis is unreachable at REDIS_URL ({_first_line(exc)}).") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


class _Lazy:
    """A debug-log argument formatted only if the line is written."""

    __slots__ = ("args", "function")

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __format__(self, spec) -> str:
        return format(self.function(*self.args), spec)

    def __str__(self) -> str:
        return str(self.function(*self.args))


def _lazy_autobahn_debug_arguments() -> None:
    """Have autobahn format its debug lines' arguments only when debug logging is on.

    autobahn builds them whatever the level: on every connection it pretty-prints its whole
    configuration (`pformat`, a tenth of the CPU of a connection's handshake, welcome and
    join), and on every frame in or out it colours two or three values with click (`hltype`,
    `hlval`: a few percent of a delivery). The modules' names are rebound to lazy versions;
    the lines are the same when they are written.
    """
    from autobahn import util
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol

    protocol.pformat = lambda obj: _Lazy(pprint.pformat, obj)
    for module in (protocol, twisted_websocket):
        module.hltype = lambda obj: _Lazy(util.hltype, obj)
        module.hlval = lambda val, color="white", bold=True: _Lazy(util.hlval, val, color, bold)


def _requests_without_form_parsing() -> None:
    """daphne's HTTP requests, without Twisted's parsing of POST form bodies.

    Twisted's `Request` reads the Content-Type of every POST through the standard library's
    email parser (to find form submissions for `request.args`): 7% of a `POST /api/sessions/
    {id}/code`'s CPU. daphne never reads `args`, it hands the body to the application as it
    came, so its request class is rebound (where its factory looks it up) to one that asks
    Twisted not to parse forms.
    """
    from daphne import http_protocol

    original = http_protocol.WebRequest
    if getattr(original, "parses_forms", True) is False:
        return

    class BodyOnlyWebRequest(original):
        parses_forms = False

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("parsePOSTFormSubmission", False)
            super().__init__(*args, **kwargs)

    http_protocol.WebRequest = BodyOnlyWebRequest


def transport_buffered_bytes(transport) -> int:
    """Bytes written to a Twisted TCP transport and not yet taken by the kernel.

    Twisted keeps them in `dataBuffer` (from `offset` on) and `_tempDataBuffer`; there is
    no public accessor, so a transport without these attributes counts as empty.
    """
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return pending + getattr(transport, "_tempDataLen", 0)


def write_now(transport, data: bytes) -> None:
    """Write to a Twisted TCP transport, handing the bytes to the kernel at once when
    nothing waits before them.

    `transport.write` only buffers: it registers the socket for writing and the reactor's
    next turn sends, then unregisters it, which is two `epoll_ctl` calls and a loop turn
    per frame, a tenth of a delivery's CPU. When the transport holds nothing unsent (so
    the order is kept) the frame is sent here, as the reactor would; whatever the kernel
    does not take, and every error, goes to `transport.write`, which deals with it as before.
    """
    quiet = type(transport) is tcp.Server and transport.connected and not transport.disconnecting
    if quiet and not transport_buffered_bytes(transport):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)


class Cork:
    """The frames written to each socket in one turn of the event loop, sent together.

    A writer round broadcasts a session's changes one after another, and a batch of joins
    its arrivals: a connection gets several frames in one turn, and one `send` each was a
    tenth of a delivery's CPU. Frames are held here per transport and go out at the start
    of the next turn (one `call_soon` for all sockets), in one `send` per socket. A write
    to the same socket by another path (the ASGI send of a reply, a close) first lets out
    what is held for it (`release`), so frames keep their order; autobahn's own control
    frames (a ping's pong, the answer to a client's close) may overtake held data frames,
    which a client that is closing does not read anyway.
    """

    def __init__(self):
        self.held: dict[object, list] = {}  # transport -> [byte count, frame, frame...]
        self.scheduled = False

    def write(self, transport, data: bytes) -> None:
        held = self.held.get(transport)
        if held is None:
            self.held[transport] = [len(data), data]
            if not self.scheduled:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        else:
            held[0] += len(data)
            held.append(data)

    def held_bytes(self, transport) -> int:
        held = self.held.get(transport)
        return held[0] if held is not None else 0

    def release(self, transport) -> None:
        """Send now what is held for this transport."""
        held = self.held.pop(transport, None)
        if held is not None:
            write_now(transport, held[1] if len(held) == 2 else b"".join(held[1:]))

    def drop(self, transport) -> None:
        self.held.pop(transport, None)

    def flush(self) -> None:
        self.scheduled = False
        held, self.held = self.held, {}
        for transport, frames in held.items():
            write_now(transport, frames[1] if len(frames) == 2 else b"".join(frames[1:]))


cork = Cork()


class SocketWriter:
    """Synchronous text-frame writes to one daphne WebSocket: the broadcast path's edge.

    The ASGI send of one frame goes through four coroutines (Channels' two, daphne's, ours)
    and autobahn's `sendMessage`, which encodes, frames and logs (its debug line formats its
    arguments whatever the level) once per recipient: a quarter of the server's CPU per
    delivery. Here a frame is encoded and framed once per text (autobahn's PreparedMessage,
    its own broadcast helper, kept for the text written last: a broadcast writes one text to
    every recipient in a row) and handed to the transport. A socket that negotiated
    compression, or whose autobahn send queue holds something, goes through autobahn.
    The write-buffer bound is the same as for the ASGI path (`BoundedServer.handle_reply`).
    """

    __slots__ = ("protocol", "server")

    _last_text: str | None = None
    _last_frame: PreparedMessage | None = None

    def __init__(self, server: "BoundedServer", protocol: WebSocketProtocol):
        self.server = server
        self.protocol = protocol

    def backlog(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        transport = self.protocol.transport
        return transport_buffered_bytes(transport) + cork.held_bytes(transport) if transport is not None else 0

    def write(self, text: str) -> bool:
        """Send one text frame; False when the socket is closing (nothing was sent)."""
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN or getattr(protocol, "fell_behind", False):
            return False
        cls = SocketWriter
        if cls._last_text is text:
            frame = cls._last_frame
        else:
            frame = PreparedMessage(text.encode("utf-8"), False, False, False)
            cls._last_text, cls._last_frame = text, frame
        data = frame.payloadHybi
        transport = protocol.transport
        if self.backlog() + len(data) > settings.WS_MAX_BUFFERED_BYTES:
            self.server.close_behind(protocol)
            return False
        if protocol._perMessageCompress is not None or protocol.send_queue:
            cork.release(transport)
            protocol.sendPreparedMessage(frame)
        else:
            cork.write(transport, data)
        return True

    def interrupt(self, exc: BaseException) -> None:
        """Hand `exc` to the application's `receive`, behind the messages already waiting:
        a consumer that reads the client's frames itself (see `collaboration.inbox`) raises
        it and stops, though the client sends nothing more."""
        queue = getattr(self.protocol, "application_queue", None)
        if queue is not None:
            queue.put_nowait(exc)

    def close_behind(self) -> None:
        """Close with 1013: the client does not read what it is sent."""
        if not getattr(self.protocol, "fell_behind", False):
            self.server.close_behind(self.protocol)


class BoundedServer(Server):
    """daphne, with a bound on the bytes it holds unsent for one WebSocket.

    daphne hands every `websocket.send` to Twisted at once and Twisted buffers whatever the
    client does not read, without limit: a client that never reads (but pings, so it is
    never idle) grew the server by the whole document on every edit. A send that would take
    a connection's buffer past WS_MAX_BUFFERED_BYTES is dropped instead, and the connection
    closed with 1013; a client that does not read the close frame either is cut off (its
    buffer freed) after ABORT_AFTER_SECONDS. Its disconnect reaches the consumer as usual.
    """

    def run(self):
        from twisted.internet import reactor

        self.ports = []
        self.stopping = False
        self.stop_task = None
        # autobahn's default drops the TCP connection on a frame past its size limit (the
        # client sees 1006 and no reason); closing instead sends 1009 "message too big".
        reactor.callWhenRunning(self.ws_factory_close_on_failure)
        reactor.callWhenRunning(self.install_stop_handlers)
        super().run()

    def listen_success(self, port):
        self.ports.append(port)
        super().listen_success(port)

    # --- stopping ----------------------------------------------------------------------

    def install_stop_handlers(self) -> None:
        """SIGTERM and SIGINT stop the server cleanly (`stop`), a second one at once.

        Twisted's own handlers stop the reactor there and then: every WebSocket was cut
        (the client saw 1006) and a round of changes could be cut before its answers went out.
        """
        signal.signal(signal.SIGTERM, self.on_stop_signal)
        # A worker's SIGINT (Ctrl-C reaches the whole process group) is its parent's to pass
        # on as SIGTERM; taken here too it would count as the second, "stop now", signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN if settings.WORKER_INDEX else self.on_stop_signal)
        from channels.layers import get_channel_layer

        from execution.services import execution_warm

        layer = get_channel_layer()
        loop = asyncio.get_event_loop()
        if hasattr(layer, "serve_here"):
            # This loop lives as long as the server (on it once it runs: startup comes first).
            loop.call_soon(layer.serve_here)
        # The spare sandboxes, built on the loop that uses them (kept: a task only weakly held).
        self.warm_task = loop.create_task(execution_warm())

    def on_stop_signal(self, signum, _frame) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(self.begin_stop, signal.Signals(signum).name)

    def begin_stop(self, reason: str) -> None:
        from twisted.internet import reactor

        if self.stopping:
            logger.warning("Stopping now (%s again)", reason)
            reactor.stop()
            return
        self.stopping = True
        self.stop_task = asyncio.ensure_future(self.stop_cleanly(reason))

    async def stop_cleanly(self, reason: str) -> None:
        """Stop accepting; let the changes in flight commit and their answers go out; close
        every WebSocket with 1012 (the client reconnects, to another worker or to this server
        once it is back); wait for the connections to end; stop."""
        from twisted.internet import reactor

        from collaboration.presence import open_connections
        from collaboration.writer import get_writer
        from execution.services import execution_stop

        logger.warning(
            "Stopping (%s): closing WebSockets with %d once changes in flight commit", reason, CLOSE_SERVICE_RESTART
        )
        try:
            for port in self.ports:
                port.stopListening()
            writer = get_writer()
            await _bounded(writer.idle(), DRAIN_COMMIT_SECONDS)
            for protocol in self.websockets():
                if protocol.state == protocol.STATE_OPEN:
                    cork.release(protocol.transport)
                    protocol.sendCloseFrame(code=CLOSE_SERVICE_RESTART, reasonUtf8=b"Server restarting; reconnect.")
            deadline = time.monotonic() + DRAIN_CLOSE_SECONDS
            # Until every consumer has cleaned up (left the presence): nothing signals that.
            while open_connections() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await _bounded(writer.idle(), DRAIN_COMMIT_SECONDS)
            await _bounded(execution_stop(), DRAIN_COMMIT_SECONDS)  # the spare sandboxes and their directories
        except Exception:
            logger.exception("Could not stop cleanly; stopping now")
        finally:
            reactor.stop()

    def websockets(self) -> list:
        return [protocol for protocol in self.connections if isinstance(protocol, WebSocketProtocol)]

    def create_application(self, protocol, scope):
        if isinstance(protocol, WebSocketProtocol):
            scope.setdefault("extensions", {})[SOCKET_EXTENSION] = SocketWriter(self, protocol)
        return super().create_application(protocol, scope)

    def ws_factory_close_on_failure(self) -> None:
        self.ws_factory.setProtocolOptions(failByDrop=False)
        if settings.WORKER_INDEX:
            # Which worker took a WebSocket: its handshake answer says (as /health does for HTTP).
            self.ws_factory.headers = {**(self.ws_factory.headers or {}), "X-Worker": str(settings.WORKER_INDEX)}

    async def handle_reply(self, protocol, message):
        if isinstance(protocol, WebSocketProtocol):
            transport = protocol.transport
            if message.get("type") == "websocket.send":
                if getattr(protocol, "fell_behind", False):
                    return
                size = len(message.get("text") or message.get("bytes") or "")
                if (
                    transport_buffered_bytes(transport) + cork.held_bytes(transport) + size
                    > settings.WS_MAX_BUFFERED_BYTES
                ):
                    self.close_behind(protocol)
                    return
            # What this socket was written through SocketWriter goes first.
            cork.release(transport)
        await super().handle_reply(protocol, message)

    def close_behind(self, protocol) -> None:
        protocol.fell_behind = True
        cork.drop(protocol.transport)  # the client reconnects for the current document
        logger.warning(
            "WebSocket %s fell more than %d bytes behind; closing it with %d",
            protocol.client_addr,
            settings.WS_MAX_BUFFERED_BYTES,
            CLOSE_TOO_FAR_BEHIND,
        )
        from twisted.internet import reactor

        reactor.callLater(ABORT_AFTER_SECONDS, self.abort_behind, protocol)
        # autobahn's sendClose takes only 1000 and 3000-4999; 1013 is a valid RFC 6455 code
        # (and what a browser reports), so the frame is sent one level down.
        protocol.sendCloseFrame(code=CLOSE_TOO_FAR_BEHIND, reasonUtf8=b"Too far behind; reconnect.")

    @staticmethod
    def abort_behind(protocol) -> None:
        transport = protocol.transport
        if transport is not None and getattr(transport, "connected", False):
            transport.abortConnection()


async def _bounded(awaitable, seconds: float) -> None:
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        logger.warning("Gave up waiting after %.0f s", seconds)


class BoundedCommandLineInterface(CommandLineInterface):
    server_class = BoundedServer
