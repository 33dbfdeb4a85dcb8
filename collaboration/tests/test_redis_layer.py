"""The Redis fan-out layer: two layers stand for two processes on one real Redis."""

import asyncio
import uuid

import pytest

from collaboration.redis_layer import RedisFanoutChannelLayer
from collaboration.tests.services import needs_redis

pytestmark = needs_redis


@pytest.fixture
async def processes():
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    layers = [RedisFanoutChannelLayer(hosts=["redis://127.0.0.1:6379/0"], prefix=prefix) for _ in range(2)]
    yield layers
    for layer in layers:
        await layer.flush()


class Inbox:
    """A receiver attached to a channel: what it got, and an event per arrival."""

    def __init__(self, layer, channel):
        self.messages: list[dict] = []
        self.arrived = asyncio.Event()
        layer.attach(channel, self.take)

    def take(self, message, direct):
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, count: int):
        async with asyncio.timeout(15):  # a safety net: Redis answers in milliseconds
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def test_a_group_send_reaches_members_in_both_processes_once_and_in_order(processes):
    one, two = processes
    here, there = await one.new_channel(), await two.new_channel()
    inbox_here, inbox_there = Inbox(one, here), Inbox(two, there)
    await one.group_add("session-x", here)
    await two.group_add("session-x", there)
    for n in range(50):
        await one.group_send("session-x", {"type": "session.message", "n": n})
    await inbox_there.wait_for(50)
    await inbox_here.wait_for(50)
    assert [m["n"] for m in inbox_there.messages] == list(range(50))
    # The sender's own process delivered directly, and not again when Redis echoed it.
    await one.group_send("session-x", {"type": "session.message", "n": "last"})
    await inbox_there.wait_for(51)
    assert [m["n"] for m in inbox_here.messages] == [*range(50), "last"]


async def test_a_send_to_another_processes_channel_arrives_there(processes):
    one, two = processes
    there = await two.new_channel()
    inbox = Inbox(two, there)
    await two.group_add("session-y", there)  # starts the subscriber of `two`
    await one.send(there, {"type": "session.message", "text": "ack"})
    await inbox.wait_for(1)
    assert inbox.messages == [{"type": "session.message", "text": "ack"}]


async def test_a_process_without_members_gets_nothing(processes):
    one, two = processes
    here, there = await one.new_channel(), await two.new_channel()
    inbox_here, inbox_there = Inbox(one, here), Inbox(two, there)
    await one.group_add("session-z", here)
    await two.group_add("session-z", there)
    await two.group_discard("session-z", there)
    await two.group_add("session-other", there)
    await two.group_send("session-z", {"type": "session.message", "n": 1})
    await two.group_send("session-other", {"type": "session.message", "n": 2})
    await inbox_here.wait_for(1)
    await inbox_there.wait_for(1)
    assert [m["n"] for m in inbox_here.messages] == [1]
    assert [m["n"] for m in inbox_there.messages] == [2]
