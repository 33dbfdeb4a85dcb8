"""The message loop of a connection: one bounded inbox fed by two pumps.

Channels' own loop (AsyncConsumer.__call__) creates a task and runs asyncio.wait for every
message, and hops to a sync thread before every handler. Here two pumps (the socket and
the connection's channel) feed one queue, so a message costs a put and a get:

- the inbox is bounded, so a consumer held up (by the database, say) stops taking from its
  channel and the channel layer's per-channel limits apply, instead of this queue growing;
- whatever ends the loop (a disconnect, a send on a closed socket, an error in a handler,
  a cancellation by daphne), `connection_ended` runs, once, shielded from cancellation.
"""

import asyncio
import contextlib
import functools
import logging

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

# Messages a connection's loop holds before it stops taking more from the client and its channel.
INBOX_SIZE = 64


class InboxConsumer(AsyncWebsocketConsumer):
    """An AsyncWebsocketConsumer whose messages come through one bounded inbox.

    Subclasses implement the usual handlers and two hooks: `connection_started` (sync,
    before the first message) and `connection_ended` (the cleanup, however the loop ended).
    `self.closed` becomes True once a send finds the socket closing; subclasses set it too.
    """

    async def __call__(self, scope, receive, send):
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.base_send = functools.partial(self._send_or_stop, send)
        self.inbox = inbox = asyncio.Queue(maxsize=INBOX_SIZE)
        # Set when a send failed: the loop stops after the message it is handling.
        self.gone = False
        self.closed = False
        self.connection_started()

        async def pump(source):
            try:
                while True:
                    await inbox.put(await source())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await inbox.put(exc)

        pumps = [
            asyncio.ensure_future(pump(receive)),
            asyncio.ensure_future(pump(functools.partial(self.channel_layer.receive, self.channel_name))),
        ]
        try:
            while True:
                message = await inbox.get()
                if isinstance(message, Exception):
                    raise message
                await self.dispatch(message)
                if self.gone:
                    break
        except StopConsumer:
            pass
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            # Shielded, so a second cancellation cannot cut the cleanup short.
            await asyncio.shield(self.connection_ended())

    async def _send_or_stop(self, send, message):
        """Send to the socket; a send on a connection already closing ends the loop."""
        if self.gone:
            return
        try:
            await send(message)
        except Exception as exc:
            # daphne (autobahn) raises "Attempt to send on a closed protocol" when the socket
            # is closing; its disconnect may never reach us, so this is the end of the connection.
            logger.info("Send on %s failed (%s); treating the connection as closed", self.channel_name, exc)
            self.gone = True
            self.closed = True
            # Wakes the loop if it is waiting; a full inbox will wake it anyway.
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

    def connection_started(self) -> None:
        """Called once the channel exists, before the first message."""

    async def connection_ended(self) -> None:
        """Called once when the loop ends, whatever ended it."""
