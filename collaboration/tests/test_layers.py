"""The in-memory channel layer: cheap fan-out that never drops a message silently."""

import logging
import time

import pytest
from channels.exceptions import ChannelFull

from collaboration.layers import FastInMemoryChannelLayer


def move_clock_a_minute_on(monkeypatch):
    """The layer's clock a minute ahead, so its messages have expired without waiting."""

    class Later:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def time():
            return time.time() + 60

    monkeypatch.setattr("collaboration.layers.time", Later)


class TestFastInMemoryChannelLayer:
    async def test_group_send_reaches_every_member_in_order(self):
        """Each member receives every group message, in the order sent."""
        layer = FastInMemoryChannelLayer(capacity=100)
        names = [await layer.new_channel() for _ in range(3)]
        for name in names:
            await layer.group_add("g", name)
        for i in range(5):
            await layer.group_send("g", {"type": "m", "i": i})
        for name in names:
            assert [(await layer.receive(name))["i"] for _ in range(5)] == list(range(5))

    async def test_full_channel_is_counted_and_logged(self, caplog):
        """A member over capacity loses the message, and the loss is logged and counted."""
        layer = FastInMemoryChannelLayer(capacity=2)
        name = await layer.new_channel()
        await layer.group_add("g", name)
        with caplog.at_level(logging.WARNING, logger="collaboration.layers"):
            for i in range(3):
                await layer.group_send("g", {"type": "m", "i": i})
        assert layer.dropped == 1
        assert "dropped" in caplog.text
        with pytest.raises(ChannelFull):
            await layer.send(name, {"type": "m"})

    async def test_expired_messages_are_counted_and_logged(self, caplog, monkeypatch):
        """Messages left unread past the expiry are dropped with a warning, not silently."""
        layer = FastInMemoryChannelLayer(expiry=0.05)
        name = await layer.new_channel()
        await layer.group_add("g", name)
        await layer.send(name, {"type": "m"})
        move_clock_a_minute_on(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="collaboration.layers"):
            layer._clean_expired()
        assert layer.dropped == 1
        assert "expired" in caplog.text

    async def test_leftovers_of_a_closed_connection_expire_quietly(self, caplog, monkeypatch):
        """Messages to a channel that left its groups are discarded without counting as lost."""
        layer = FastInMemoryChannelLayer(expiry=0.05)
        name = await layer.new_channel()
        await layer.send(name, {"type": "m"})
        move_clock_a_minute_on(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="collaboration.layers"):
            layer._clean_expired()
        assert layer.dropped == 0
        assert name not in layer.channels
        assert caplog.text == ""
