"""The message loop of a connection: one bounded inbox, and its frames out.

Channels' own loop (AsyncConsumer.__call__) creates a task and runs asyncio.wait for every
message, and hops to a sync thread before every handler. Here pumps feed one queue, so a
message costs a put and a get (and with direct delivery, below, the loop reads the client's
frames itself: no pump, no inbox):

- the inbox is bounded, so a consumer held up (by the database, say) stops taking from the
  client, instead of this queue growing (with the server's own queue, daphne's, as before);
- whatever ends the loop (a disconnect, a send on a closed socket, an error in a handler,
  a cancellation by daphne), `connection_ended` runs, once, shielded from cancellation.

Messages from the channel layer take the shortest way the server allows. Under
`manage.py serve` (daphne with the socket extension, SOCKET_EXTENSION) and the in-memory
layer, the connection attaches a receiver to its channel: the layer hands it each message
in the sender's task and its frames are written to the socket there and then (`emit`),
with no queue, task switch or ASGI send coroutine per recipient. Otherwise (another
server, the Redis layer, Channels' test communicator) a second pump takes the channel's
messages into the inbox, and frames go out through the ASGI send, in the order emitted.
"""

import asyncio
import contextlib
import functools
import logging
from collections import deque

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

# Messages a connection's loop holds before it stops taking more from the client and its channel.
INBOX_SIZE = 64

# The ASGI scope extension (set by `manage.py serve`) with synchronous socket writes:
# `write(text) -> bool` (False: the socket is closing), `backlog() -> int` (bytes unread),
# `close_behind()` (close with 1013), `interrupt(exc)` (`receive` returns the exception
# `exc`, after the messages already waiting; the loop raises it).
SOCKET_EXTENSION = "interview.socket"

# The outbox of every connection with the socket extension: it stays empty.
_NO_OUTBOX: deque[str] = deque()


class InboxConsumer(AsyncWebsocketConsumer):
    """An AsyncWebsocketConsumer whose messages come through one bounded inbox.

    Subclasses implement the usual handlers and three hooks: `connection_started` (sync,
    before the first message), `channel_message` (sync: a channel-layer message handed over
    directly, see `direct`) and `connection_ended` (the cleanup, however the loop ended).
    Frames go out with `emit` (sync, in order). `self.closed` becomes True once a send
    finds the socket closing; subclasses set it too.
    """

    async def __call__(self, scope, receive, send):
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.base_send = functools.partial(self._send_or_stop, send)
        # Set when a send failed: the loop stops after the message it is handling.
        self.gone = False
        self.closed = False
        self.socket = (scope.get("extensions") or {}).get(SOCKET_EXTENSION)
        # Frames emitted and not yet sent (only without the socket extension: a deque is
        # 600 bytes, and an idle connection costs about 12 kB in all).
        self.outbox: deque[str] = deque() if self.socket is None else _NO_OUTBOX
        self.direct = self.socket is not None and hasattr(self.channel_layer, "attach")
        if self.direct:
            self.channel_layer.attach(self.channel_name, self.channel_message)
        self.inbox = inbox = None if self.direct else asyncio.Queue(maxsize=INBOX_SIZE)
        self.connection_started()

        async def pump(source):
            try:
                while True:
                    await inbox.put(await source())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await inbox.put(exc)

        if self.direct:
            # The client's frames are then the loop's only source: it reads them from the
            # server's queue itself, without a pump task and this second queue (a task switch,
            # a put and a get per frame: 191 -> 170 µs of server CPU per delivery at 20 x 5
            # clients x 10 updates/s); `_stop` wakes the read through the socket extension.
            pumps = []
            next_message = receive
        else:
            channel = functools.partial(self.channel_layer.receive, self.channel_name)
            pumps = [asyncio.ensure_future(pump(receive)), asyncio.ensure_future(pump(channel))]
            next_message = inbox.get
        try:
            while True:
                message = await next_message()
                if isinstance(message, Exception):
                    raise message
                await self.dispatch(message)
                if self.outbox:
                    await self.flush_outbox()
                if self.gone:
                    break
        except StopConsumer:
            pass
        finally:
            if self.direct:
                self.channel_layer.detach(self.channel_name)
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            # Shielded, so a second cancellation cannot cut the cleanup short.
            await asyncio.shield(self.connection_ended())

    def emit(self, text: str) -> None:
        """Send a text frame after every frame emitted before it."""
        if self.gone:
            return
        if self.socket is None:
            self.outbox.append(text)
        elif not self.socket.write(text):
            self._stop("the socket is closing")

    async def flush_outbox(self) -> None:
        outbox = self.outbox
        while outbox:
            await self.send(text_data=outbox.popleft())

    async def send_text(self, text: str) -> None:
        """Emit a frame and, without the socket extension, send what waits."""
        self.emit(text)
        if self.outbox:
            await self.flush_outbox()

    async def _send_or_stop(self, send, message):
        """Send to the socket; a send on a connection already closing ends the loop."""
        if self.gone:
            return
        try:
            await send(message)
        except Exception as exc:
            # daphne (autobahn) raises "Attempt to send on a closed protocol" when the socket
            # is closing; its disconnect may never reach us, so this is the end of the connection.
            self._stop(exc)

    def _stop(self, reason) -> None:
        logger.info("Send on %s failed (%s); treating the connection as closed", self.channel_name, reason)
        self.gone = True
        self.closed = True
        self.outbox.clear()
        # Wakes the loop if it is waiting; a full inbox will wake it anyway.
        if self.direct:
            self.socket.interrupt(StopConsumer())
        else:
            with contextlib.suppress(asyncio.QueueFull):
                self.inbox.put_nowait(StopConsumer())

    async def dispatch(self, message):
        # Channels >= 4.2 hops to the sync thread before every handler to close stale
        # database connections; our database work already runs in database_sync_to_async,
        # which does that itself, so skip the hop on every frame and group message.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        # Channels' own, without the same hop (to close stale database connections) at every
        # disconnect: a fleet of clients leaving at once queued a thread hop each. This
        # consumer class lists no `groups` for Channels to discard.
        await self.disconnect(message["code"])
        raise StopConsumer()

    def connection_started(self) -> None:
        """Called once the channel exists, before the first message."""

    def channel_message(self, message: dict, direct: bool) -> None:
        """A message of this connection's channel, handed over by the layer in the sender's
        task (`direct`: sent to this channel alone, not to a group). Must not block."""

    async def connection_ended(self) -> None:
        """Called once when the loop ends, whatever ended it."""
