"""The channel layer of a deployment of many processes: in-process delivery as the
in-memory layer does it, and Redis pub/sub between processes.

channels-redis's layer goes through Redis for every message, to the process's own
connections too: a group send is four round trips (expiry, members, a pipeline, a Lua
script) awaited in turn by the sender, and every recipient's copy is a Redis list entry
fetched by a blocking pop. The writer publishes a session's changes one after another,
so on this 2-core machine one process delivered 200 messages a second at 4.4 ms of CPU
each (the target load is 4,000), and past 100 at once its connection pool failed commands.

Here (`RedisFanoutChannelLayer`):
- a process's own connections get their messages as with `FastInMemoryChannelLayer`
  (directly, in the sender's task; its bounds and receivers unchanged);
- a group send is also published, once, on the group's Redis channel; every other process
  with members in the group is subscribed to it and hands the message to them;
- a send to a channel of another process (its name carries its process) is published on
  that process's own Redis channel;
- publishing is not awaited by the sender: what is published in one turn of the event loop
  goes in one pipeline on one connection, so messages keep their order, and a process's
  subscriptions are one connection too. A process subscribes to a group when its first
  member joins (and waits for Redis to confirm, so nothing published after `group_add`
  returns is missed) and unsubscribes when the last leaves.

Pub/sub delivers at most once: a message published while a process is cut off from Redis
is lost for it. Every versioned frame is numbered, so a connection that misses one
resyncs (`OrderedDelivery`'s gap timeout); presence and the document live in the database.
While Redis is unreachable, publishes are dropped (logged, at most REDIS_OUTBOX_MAX kept
waiting) and the subscriber reconnects with a growing pause, subscribing again to every
group it needs.
"""

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections import deque

import msgpack
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from collaboration.layers import FastInMemoryChannelLayer

logger = logging.getLogger(__name__)

# The subscriber's pause after losing Redis, doubling up to the maximum.
RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
# How long group_add waits for Redis to confirm a subscription before going on without it.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0


class RedisFanoutChannelLayer(FastInMemoryChannelLayer):
    def __init__(self, hosts=None, prefix: str = "interview", **kwargs):
        super().__init__(**kwargs)
        self.url = (hosts or ["redis://127.0.0.1:6379/0"])[0]
        self.prefix = prefix
        # This process's part of its channel names: a send to another process's channel
        # goes to that process's Redis channel.
        self.process = uuid.uuid4().hex[:16]
        self.bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bridge] = weakref.WeakKeyDictionary()

    # --- names -----------------------------------------------------------------------

    async def new_channel(self, prefix="specific."):
        return f"{prefix}.{self.process}!{uuid.uuid4().hex[:12]}"

    def _owner(self, channel: str) -> str | None:
        """The process a channel belongs to (from its name), None if not one of ours."""
        head, bang, _ = channel.partition("!")
        return head.rpartition(".")[2] if bang else None

    def group_topic(self, group: str) -> str:
        return f"{self.prefix}:g:{group}"

    def process_topic(self, process: str) -> str:
        return f"{self.prefix}:p:{process}"

    def serve_here(self) -> None:
        """The running loop is a server's, living as long as the process: publish from it
        through the queue from the start (see `_Bridge.publish_from_here`)."""
        self.bridge().start()

    def bridge(self) -> "_Bridge":
        loop = asyncio.get_running_loop()
        bridge = self.bridges.get(loop)
        if bridge is None:
            bridge = self.bridges[loop] = _Bridge(self, loop)
        return bridge

    # --- the channel layer API ---------------------------------------------------------

    async def send(self, channel, message):
        owner = self._owner(channel)
        if owner is None or owner == self.process:
            await super().send(channel, message)
            return
        self.require_valid_channel_name(channel)
        await self.bridge().publish_from_here(self.process_topic(owner), {"c": channel, "m": message})

    async def group_add(self, group, channel):
        await super().group_add(group, channel)
        await self.bridge().subscribe(self.group_topic(group))

    async def group_discard(self, group, channel):
        await super().group_discard(group, channel)
        if not self.groups.get(group):
            self.bridge().unsubscribe(self.group_topic(group))

    async def group_send(self, group, message):
        await super().group_send(group, message)
        await self.bridge().publish_from_here(self.group_topic(group), {"g": group, "m": message})

    async def flush(self):
        for bridge in list(self.bridges.values()):
            await bridge.close()
        self.bridges.clear()
        await super().flush()

    # --- from other processes ----------------------------------------------------------

    async def deliver(self, envelope: dict) -> None:
        """A message another process published: to this process's members or channel."""
        if envelope.get("o") == self.process:
            return  # our own group send, delivered here already
        message = envelope["m"]
        if "g" in envelope:
            await FastInMemoryChannelLayer.group_send(self, envelope["g"], message)
            return
        try:
            await FastInMemoryChannelLayer.send(self, envelope["c"], message)
        except Exception:
            logger.warning("A message from another process to %s was dropped (channel full)", envelope["c"])


class _Bridge:
    """One event loop's two Redis connections: the publisher and the subscriber."""

    def __init__(self, layer: RedisFanoutChannelLayer, loop: asyncio.AbstractEventLoop):
        self.layer = layer
        self.loop = loop
        self.publisher = aioredis.Redis.from_url(layer.url, socket_connect_timeout=5, socket_timeout=10)
        self.subscriber = aioredis.Redis.from_url(layer.url, socket_connect_timeout=5)
        self.pubsub = self.subscriber.pubsub()
        self.outbox: deque[tuple[str, bytes]] = deque()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.last_warning = 0.0
        self.topics: set[str] = set()  # what this loop's members need
        self.confirmed: dict[str, asyncio.Future] = {}
        self.started = False
        self.own_confirmed: asyncio.Future | None = None  # set by start()
        # One SUBSCRIBE at a time on the connection: the reader's first one (every topic) and
        # a member's could interleave there and one of them was lost (this process's own topic
        # never confirmed: sends to its channels from other processes went nowhere).
        self.subscribing = asyncio.Lock()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self.started:
            self.started = True
            own = self.layer.process_topic(self.layer.process)
            self.topics.add(own)
            # Confirmed by the reader's first SUBSCRIBE; every subscribe() waits for it too, so a
            # member that joined can be sent to by name from any process at once.
            self.own_confirmed = self.confirmed[own] = self.loop.create_future()
            self.tasks = [self.loop.create_task(self.publish_loop()), self.loop.create_task(self.read_loop())]

    # --- publishing --------------------------------------------------------------------

    async def publish_from_here(self, topic: str, envelope: dict) -> None:
        """Publish: queued, on a loop that has members (the server's: it lives on); at once
        and awaited on any other (a management command's `async_to_sync` makes a loop per
        call and closes it after, with whatever was queued on it)."""
        if self.started:
            self.publish(topic, envelope)
            return
        envelope["o"] = self.layer.process
        try:
            await self.publisher.publish(topic, msgpack.packb(envelope, use_bin_type=True))
        except (RedisError, OSError) as exc:
            logger.warning("Could not publish to Redis (%s): a message to other processes was dropped", exc)
        finally:
            self.layer.bridges.pop(self.loop, None)
            with contextlib.suppress(Exception):
                await self.publisher.aclose()
                await self.subscriber.aclose()

    def publish(self, topic: str, envelope: dict) -> None:
        self.start()
        if len(self.outbox) >= settings.REDIS_OUTBOX_MAX:
            self.dropped += 1
            self.warn("Redis does not keep up: %d messages to other processes dropped so far", self.dropped)
            return
        envelope["o"] = self.layer.process
        self.outbox.append((topic, msgpack.packb(envelope, use_bin_type=True)))
        self.wake.set()

    async def publish_loop(self) -> None:
        pause = RECONNECT_FIRST_SECONDS
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                batch = [self.outbox.popleft() for _ in range(min(len(self.outbox), 1000))]
                try:
                    pipe = self.publisher.pipeline(transaction=False)
                    for topic, data in batch:
                        pipe.publish(topic, data)
                    await pipe.execute()
                    pause = RECONNECT_FIRST_SECONDS
                except (RedisError, OSError) as exc:
                    self.dropped += len(batch)
                    self.warn("Could not publish to Redis (%s): %d messages dropped so far", exc, self.dropped)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RECONNECT_MAX_SECONDS)

    # --- subscribing -------------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Until Redis confirms the topic and this process's own channel (a member that joined
        can then be reached by its group and by name from any process)."""
        self.start()
        waits = [(self.own_confirmed, "this process's channel")]
        if topic not in self.topics or topic in self.confirmed:
            self.topics.add(topic)
            future = self.confirmed.get(topic)
            if future is None:
                future = self.confirmed[topic] = self.loop.create_future()
                try:
                    async with self.subscribing:
                        await self.pubsub.subscribe(topic)
                except (RedisError, OSError) as exc:
                    # The reader subscribes again to every topic once it has Redis back.
                    self.warn("Could not subscribe to %s (%s)", topic, exc)
                    self.confirmed.pop(topic, None)
                    return
            waits.insert(0, (future, topic))
        for pending, name in waits:
            try:
                await asyncio.wait_for(asyncio.shield(pending), SUBSCRIBE_TIMEOUT_SECONDS)
            except TimeoutError:
                self.warn("Redis did not confirm the subscription to %s in time", name)

    def unsubscribe(self, topic: str) -> None:
        if topic in self.topics:
            self.topics.discard(topic)
            self.confirmed.pop(topic, None)
            task = self.loop.create_task(self._unsubscribe(topic))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _unsubscribe(self, topic: str) -> None:
        if topic not in self.topics:  # nobody joined again meanwhile
            with contextlib.suppress(RedisError, OSError):  # gone with the connection anyway
                await self.pubsub.unsubscribe(topic)

    async def read_loop(self) -> None:
        pause = RECONNECT_FIRST_SECONDS
        resubscribe = True
        while True:
            try:
                if resubscribe:
                    async with self.subscribing:
                        await self.pubsub.subscribe(*sorted(self.topics))
                    resubscribe = False
                item = await self.pubsub.get_message(timeout=None)
                pause = RECONNECT_FIRST_SECONDS
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.warn("Lost Redis for messages from other processes (%s); reconnecting", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)
                await self._reset()
                resubscribe = True
                continue
            if item is None:
                continue
            kind = item.get("type")
            if kind == "subscribe":
                topic = item["channel"].decode() if isinstance(item["channel"], bytes) else item["channel"]
                future = self.confirmed.pop(topic, None)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind == "message":
                try:
                    envelope = msgpack.unpackb(item["data"], raw=False)
                    await self.layer.deliver(envelope)
                except Exception:
                    logger.exception("Could not deliver a message from another process")

    async def _reset(self) -> None:
        """A new subscriber connection (the old one is broken)."""
        with contextlib.suppress(Exception):  # a broken connection may fail to close in any way
            await self.pubsub.aclose()
        self.pubsub = self.subscriber.pubsub()

    def warn(self, text: str, *args) -> None:
        now = time.monotonic()
        if now - self.last_warning > 5.0:
            self.last_warning = now
            logger.warning(text, *args)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # closing what may be broken
            await self.pubsub.aclose()
            await self.publisher.aclose()
            await self.subscriber.aclose()
