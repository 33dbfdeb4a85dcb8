"""Every way a connection ends removes its presence: no ghost participants."""

import asyncio
import contextlib
import json

import pytest
from websockets.asyncio.client import connect

from collaboration.presence import connections_heartbeat, participant_join
from interview.testing import RunningServer, http_json
from sessions.models import ParticipantConnection
from sessions.selectors import participants_active
from sessions.tests.factories import session_make


@pytest.mark.django_db
class TestHeartbeat:
    def test_only_connections_known_open_are_refreshed(self, settings):
        """A row whose connection this process no longer holds is not kept alive: it expires."""
        settings.PRESENCE_TTL_SECONDS = 45
        session = session_make()
        participant_join(session_id=session.id, user_id="open", name="O", channel_name="chan.open")
        participant_join(session_id=session.id, user_id="ghost", name="G", channel_name="chan.ghost")
        old = ParticipantConnection.objects.first().seen_at.replace(year=2000)
        ParticipantConnection.objects.update(seen_at=old)

        assert connections_heartbeat(channel_names={"chan.open"}) == 1

        assert [p.user_id for p in participants_active(session=session)] == ["open"]
        assert not ParticipantConnection.objects.filter(channel_name="chan.ghost").exists()


@pytest.fixture
def presence_server(tmp_path):
    env = {
        "PRESENCE_TTL_SECONDS": "5",
        "PRESENCE_HEARTBEAT_SECONDS": "1",
        "WS_IDLE_TIMEOUT_SECONDS": "2",
        "WS_RATE_LIMIT_PER_SECOND": "1000",
        "WS_RATE_LIMIT_BURST": "1000",
    }
    with RunningServer(tmp_path, env=env) as server:
        yield server


async def _close_while_broadcasting(ws, how: int) -> None:
    """End a connection the ways a real client does, while broadcasts are on their way to it."""
    if how == 0:
        await ws.close()  # a clean close handshake
    elif how == 1:
        # Goes silent: reads and sends nothing more. The server closes it when it has been
        # idle too long, and waits in CLOSING for a reply that never comes, while every
        # broadcast to it is a send on a closing protocol.
        ws.transport.pause_reading()
    elif how == 2:
        ws.transport.close()  # TCP FIN without a close frame
    else:
        ws.transport.abort()  # TCP RST


async def test_no_ghosts_when_sockets_close_during_broadcasts(presence_server):
    """Sockets that close (cleanly, by FIN, by RST) or go silent until the server closes them, while
    edits are broadcast to them, all leave: the others get `user-left`, and /participants and
    activeParticipants are right."""
    server = presence_server
    session = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
    sid = session["sessionId"]
    # A document of some size, so that what is sent to a closing socket takes a while to flush.
    await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code", "POST", {"code": "z" * 20_000})
    url = f"{server.ws_url}/ws/sessions/{sid}"
    left: set[str] = set()
    joined: set[str] = set()
    changed = asyncio.Event()

    async with connect(url) as watcher, connect(url) as editor:
        await watcher.recv()
        version = json.loads(await editor.recv())["data"]["version"]
        await watcher.send(json.dumps({"type": "join", "userId": "watcher", "data": {"name": "W"}}))
        await editor.send(json.dumps({"type": "join", "userId": "editor", "data": {"name": "E"}}))

        async def watch():
            async for frame in watcher:
                message = json.loads(frame)
                if message["type"] == "user-left":
                    left.add(message["userId"])
                    changed.set()
                elif message["type"] == "user-joined":
                    joined.add(message["userId"])
                    changed.set()

        stop = asyncio.Event()

        async def keep_watcher_alive():
            while not stop.is_set():
                await watcher.send(json.dumps({"type": "ping"}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

        async def edit():
            # Keep broadcasts flowing: the next edit as soon as the last one is acknowledged.
            nonlocal version
            seq = 0
            while not stop.is_set():
                seq += 1
                change = [{"from": 0, "to": 50, "insert": "xy"[seq % 2] * 50}]  # the size stays
                data = {"changes": change, "version": version, "seq": seq}
                await editor.send(json.dumps({"type": "code-update", "data": data}))
                while True:
                    message = json.loads(await editor.recv())
                    if message["type"] in ("code-ack", "error"):
                        version = message["data"].get("version", version)
                        break

        async def wait_for(condition):
            async with asyncio.timeout(60):  # a safety net; the events come much sooner
                while not condition():
                    changed.clear()
                    await changed.wait()

        watching = asyncio.ensure_future(watch())
        pinging = asyncio.ensure_future(keep_watcher_alive())
        editing = asyncio.ensure_future(edit())
        ghosts: list[str] = []
        silent = []
        try:
            for round_ in range(12):
                sockets = [await connect(url) for _ in range(8)]
                names = [f"ghost-{round_}-{i}" for i in range(len(sockets))]
                for ws, name in zip(sockets, names, strict=True):
                    await ws.send(json.dumps({"type": "join", "userId": name, "data": {"name": name}}))
                await wait_for(lambda names=names: joined.issuperset(names))
                await asyncio.gather(
                    *(_close_while_broadcasting(ws, i % 4) for i, ws in enumerate(sockets)), return_exceptions=True
                )
                ghosts.extend(names)
                silent.extend(sockets[1::4])
            # Every ghost's leaving was announced.
            await wait_for(lambda: left.issuperset(ghosts))
        finally:
            stop.set()
            await editing
            await pinging
            for ws in silent:
                ws.transport.abort()
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

        # Presence settles: poll /participants (the event) with a safety timeout.
        participants_url = f"{server.url}/api/sessions/{sid}/participants"
        async with asyncio.timeout(60):
            while True:
                body = await asyncio.to_thread(http_json, participants_url)
                present = sorted(p["userId"] for p in body["participants"])
                if present == ["editor", "watcher"]:
                    break
                await asyncio.sleep(0.2)
        assert (await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}"))["activeParticipants"] == 2
    assert left >= set(ghosts)
    assert not left & {"editor", "watcher"}
