"""The frames `manage.py serve` writes to one socket in one loop turn go out together, in order."""

import asyncio

from interview.management.commands.serve import Cork


class RecordingTransport:
    """Stands in for a Twisted TCP transport (not a `tcp.Server`, so writes go to `write`)."""

    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_turns_frames_leave_in_one_write_per_socket_in_order():
    cork, log = Cork(), []
    one, two = RecordingTransport(log, "one"), RecordingTransport(log, "two")
    cork.write(one, b"a")
    cork.write(two, b"x")
    cork.write(one, b"bc")
    assert log == [] and cork.held_bytes(one) == 3 and cork.held_bytes(two) == 1
    await next_turn()
    assert log == [("one", b"abc"), ("two", b"x")]
    assert cork.held_bytes(one) == 0
    cork.write(one, b"d")
    await next_turn()
    assert log[-1] == ("one", b"d")


async def test_another_path_lets_out_what_is_held_first():
    cork, log = Cork(), []
    one = RecordingTransport(log, "one")
    cork.write(one, b"update")
    cork.release(one)  # what handle_reply does before an ASGI send or close
    one.write(b"pong")
    await next_turn()
    assert log == [("one", b"update"), ("one", b"pong")]


async def test_a_dropped_socket_gets_nothing_held():
    cork, log = Cork(), []
    one, two = RecordingTransport(log, "one"), RecordingTransport(log, "two")
    cork.write(one, b"a")
    cork.write(two, b"b")
    cork.drop(one)
    await next_turn()
    assert log == [("two", b"b")]
