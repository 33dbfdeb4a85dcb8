"""The message loop of a connection (`collaboration.inbox`) with the server's socket extension."""

import asyncio

from collaboration.inbox import SOCKET_EXTENSION, InboxConsumer


class ClosingSocket:
    """The socket extension of a connection whose socket is closing: every write fails.
    `interrupt` hands its exception to `receive`, as `manage.py serve`'s SocketWriter does."""

    def __init__(self, incoming: asyncio.Queue):
        self.incoming = incoming

    def write(self, text: str) -> bool:
        return False

    def backlog(self) -> int:
        return 0

    def close_behind(self) -> None:
        pass

    def interrupt(self, exc: BaseException) -> None:
        self.incoming.put_nowait(exc)


class Recorder(InboxConsumer):
    """Accepts, records the frames it is handed, and says when its cleanup ran."""

    def connection_started(self) -> None:
        self.received: list[str] = []
        self.ended = asyncio.Event()

    async def websocket_connect(self, message):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        self.received.append(text_data)

    async def connection_ended(self) -> None:
        self.ended.set()


async def _open(incoming: asyncio.Queue) -> tuple[Recorder, asyncio.Task]:
    """A consumer with the extension, once it has accepted the connection."""
    accepted = asyncio.Event()

    async def send(message):
        if message["type"] == "websocket.accept":
            accepted.set()

    scope = {"type": "websocket", "path": "/ws/x", "extensions": {SOCKET_EXTENSION: ClosingSocket(incoming)}}
    consumer = Recorder()
    task = asyncio.ensure_future(consumer(scope, incoming.get, send))
    incoming.put_nowait({"type": "websocket.connect"})
    await accepted.wait()
    return consumer, task


class TestDirectLoop:
    async def test_frames_are_read_from_the_servers_queue_without_an_inbox(self):
        """With direct delivery the loop takes the client's frames from `receive` itself, in order."""
        incoming = asyncio.Queue()
        consumer, task = await _open(incoming)
        assert consumer.direct
        assert consumer.inbox is None
        for text in ("a", "b", "c"):
            incoming.put_nowait({"type": "websocket.receive", "text": text})
        incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await task
        assert consumer.received == ["a", "b", "c"]
        assert consumer.ended.is_set()

    async def test_a_failed_write_from_another_task_ends_a_loop_waiting_for_the_client(self):
        """A frame that finds the socket closing, written outside the connection's task (a
        broadcast), ends the loop though the client sends nothing more; the cleanup runs."""
        incoming = asyncio.Queue()
        consumer, task = await _open(incoming)

        async def broadcast():
            consumer.emit("a frame for a closing socket")

        await asyncio.ensure_future(broadcast())
        await consumer.ended.wait()
        await task
        assert consumer.closed
