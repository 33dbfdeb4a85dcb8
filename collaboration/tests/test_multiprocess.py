"""Two server processes sharing PostgreSQL and a Redis channel layer act as one server."""

import asyncio
import json
import urllib.request
import uuid

from websockets.asyncio.client import connect

from collaboration.tests.otclient import OTClient, boundaries
from collaboration.tests.services import needs_postgres_and_redis
from interview.testing import RunningServer, http_json

pytestmark = needs_postgres_and_redis


async def test_clients_on_two_processes_converge(tmp_path, postgres_database):
    """Clients on two processes edit one document concurrently and all end with the database's text."""
    env = {"DATABASE_URL": postgres_database, "REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_PREFIX": uuid.uuid4().hex}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = await asyncio.to_thread(RunningServer(tmp_path / "one", env=env).start)
    two = RunningServer(tmp_path / "two", env=env)
    two.manage = lambda *args: None  # the first server migrated the shared database already
    await asyncio.to_thread(two.start)
    try:
        session = await asyncio.to_thread(http_json, f"{one.url}/api/sessions", "POST", {})
        sid = session["sessionId"]
        session_code = (await asyncio.to_thread(http_json, f"{one.url}/api/sessions/{sid}/code"))["code"]
        urls = [f"{server.ws_url}/ws/sessions/{sid}" for server in (one, two, one, two)]
        sockets = [await connect(url) for url in urls]
        clients = []
        for i, ws in enumerate(sockets):
            welcome = json.loads(await ws.recv())
            clients.append(OTClient.from_welcome(welcome))
            await ws.send(json.dumps({"type": "join", "userId": f"user{i}", "data": {"name": f"U{i}"}}))

        async def drive(ws, client, index):
            for n in range(15):
                offsets = boundaries(client.text)
                position = offsets[(n * 7 + index) % len(offsets)]
                outgoing = client.edit([{"from": position, "to": position, "insert": f"<{index}.{n}😀>"}])
                if outgoing:
                    await ws.send(json.dumps({"type": "code-update", "data": outgoing}))
                await asyncio.sleep(0.01)
                await pump(ws, client, 0.01)
            await pump(ws, client, 1.5)

        async def pump(ws, client, quiet):
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), quiet)
                except TimeoutError:
                    return
                outgoing = client.receive(json.loads(raw))
                if outgoing:
                    await ws.send(json.dumps({"type": "code-update", "data": outgoing}))

        await asyncio.gather(*(drive(ws, c, i) for i, (ws, c) in enumerate(zip(sockets, clients, strict=True))))
        code = await asyncio.to_thread(http_json, f"{two.url}/api/sessions/{sid}/code")
        assert all(c.inflight is None and not c.queued for c in clients)
        assert [c.text for c in clients] == [code["code"]] * 4
        assert code["version"] == 60
        # Only inserts were made (others may land inside a token): every character is kept once.
        tokens = "".join(f"<{i}.{n}😀>" for i in range(4) for n in range(15))
        assert sorted(code["code"]) == sorted(session_code + tokens)
        participants = await asyncio.to_thread(http_json, f"{one.url}/api/sessions/{sid}/participants")
        assert len(participants["participants"]) == 4

        # REST on the other process reaches clients of both, through PostgreSQL and Redis.
        await asyncio.to_thread(http_json, f"{two.url}/api/sessions/{sid}/code", "POST", {"code": "saved"})
        await asyncio.to_thread(http_json, f"{one.url}/api/sessions/{sid}", "PATCH", {"language": "java"})
        for ws in sockets:
            seen = set()
            while seen != {"code-update", "language-changed"}:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                seen.add(message["type"])
                if message["type"] == "code-update":
                    assert message["data"]["code"] == "saved"
        history = await asyncio.to_thread(http_json, f"{two.url}/api/sessions/{sid}/history?limit=100")
        kinds = [entry["changeType"] for entry in history["history"]]
        assert kinds[-2:] == ["snapshot", "language-change"]
        assert "edit" in kinds

        # Deleting on one process closes the sockets held by both.
        request = urllib.request.Request(
            f"{one.url}/api/sessions/{sid}",
            method="DELETE",
            headers={"Authorization": f"Bearer {session['ownerToken']}"},
        )
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())
        for ws in sockets:
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            while message["type"] != "error":  # a user-left of a socket closed just before
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert message["data"]["code"] == "SESSION_NOT_FOUND"
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 4404
    finally:
        one.stop()
        two.stop()
