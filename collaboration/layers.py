"""An in-memory channel layer whose fan-out is cheap and which never drops silently.

Channels' InMemoryChannelLayer scans every channel and group for expired messages,
deep-copies the message and spawns a task per recipient on every group_send, and
swallows ChannelFull. Here a send is a put on the recipient's queue, expiry is swept at
most once a second, messages are shared (the consumers treat them as read-only), a
channel is full at `capacity` messages or WS_MAX_BUFFERED_BYTES of text, and a full
channel is logged and counted.

A connection of this process may also `attach` a receiver to its channel: its messages are
then handed to it at once, in the sender's task (a broadcast is a loop over its
recipients, with no queue, future or task switch per recipient), and the receiver owns
their order and bounds. `send` to one channel tells the receiver so (`direct=True`).
"""

import asyncio
import logging
import time
from collections.abc import Callable

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from django.conf import settings

logger = logging.getLogger(__name__)


class FastInMemoryChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, max_bytes: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropped = 0
        self._next_sweep = 0.0
        # A channel holds at most `capacity` messages and `max_bytes` of their text (one
        # message always fits), so a connection that falls behind cannot hold much memory.
        self.max_bytes = settings.WS_MAX_BUFFERED_BYTES if max_bytes is None else max_bytes
        self.queued_bytes: dict[str, int] = {}
        # Channel -> (receiver(message, direct), its event loop) of a connection that takes
        # its messages at once.
        self.receivers: dict[str, tuple[Callable[[dict, bool], None], asyncio.AbstractEventLoop]] = {}

    def attach(self, channel: str, receiver: Callable[[dict, bool], None]) -> None:
        """Hand the channel's messages to `receiver`, on the running loop, from now on."""
        self.receivers[channel] = (receiver, asyncio.get_running_loop())

    def detach(self, channel: str) -> None:
        self.receivers.pop(channel, None)

    async def flush(self):
        self.receivers.clear()
        self.queued_bytes.clear()
        await super().flush()

    def _hand(self, entry, channel: str, message: dict, direct: bool, loop) -> None:
        receiver, home = entry
        if home is not loop:
            # A send from another thread's loop (async_to_sync): the receiver runs on its own.
            home.call_soon_threadsafe(self._hand, entry, channel, message, direct, home)
            return
        try:
            receiver(message, direct)
        except Exception:
            # One connection's failure must not cost the other recipients their message.
            logger.exception("The receiver of %s failed on a message", channel)

    def _took(self, channel: str, message: dict) -> None:
        left = self.queued_bytes.get(channel, 0) - _size(message)
        if left > 0:
            self.queued_bytes[channel] = left
        else:
            self.queued_bytes.pop(channel, None)

    def _clean_expired(self):
        # Channels' sweep drops expired messages without a word; count and log them.
        now = time.time()
        for channel, queue in list(self.channels.items()):
            expired = 0
            while not queue.empty() and queue._queue[0][0] < now:
                self._took(channel, queue.get_nowait()[1])
                expired += 1
            if expired:
                # A channel in no group belongs to a closed connection: its leftovers are no loss.
                live = any(channel in members for members in self.groups.values())
                if live:
                    self.dropped += expired
                    logger.warning("%d messages to %s expired unread and were dropped", expired, channel)
                self._remove_from_groups(channel)
                if queue.empty():
                    self.channels.pop(channel, None)
        cutoff = int(now) - self.group_expiry
        for members in self.groups.values():
            for name, joined in list(members.items()):
                if joined and joined < cutoff:
                    members.pop(name, None)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._clean_expired()

    def _put(self, channel: str, message: dict) -> None:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        size = _size(message)
        held = self.queued_bytes.get(channel, 0)
        if held and held + size > self.max_bytes:
            raise asyncio.QueueFull
        queue.put_nowait((time.time() + self.expiry, message))
        self.queued_bytes[channel] = held + size

    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        entry = self.receivers.get(channel)
        if entry is not None:
            self._hand(entry, channel, message, True, asyncio.get_running_loop())
            return
        try:
            self._put(channel, message)
        except asyncio.QueueFull:
            self.dropped += 1
            raise ChannelFull(channel) from None

    async def receive(self, channel):
        self.require_valid_channel_name(channel)
        self._maybe_sweep()
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            _, message = await queue.get()
            self._took(channel, message)
        finally:
            if queue.empty() and self.channels.get(channel) is queue:
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group, message):
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._maybe_sweep()
        receivers = self.receivers
        loop = asyncio.get_running_loop()
        for channel in list(self.groups.get(group, ())):
            entry = receivers.get(channel)
            if entry is not None:
                self._hand(entry, channel, message, False, loop)
                continue
            try:
                self._put(channel, message)
            except asyncio.QueueFull:
                self.dropped += 1
                logger.warning("Channel %s is full: a message to group %s was dropped", channel, group)


def _size(message: dict) -> int:
    """What a queued message holds for its connection: the text it carries (str length is O(1))."""
    text = message.get("text")
    return len(text) if isinstance(text, str) else 0
