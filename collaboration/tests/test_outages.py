"""Redis or PostgreSQL going away while the server runs, and coming back: what clients see.

The server reaches them through a TCP forwarder in the test, which is cut (its listener and
every connection through it closed) and restored on the same port.
"""

import asyncio
import json
import uuid

from websockets.asyncio.client import connect

from collaboration.tests.services import PG, REDIS, needs_postgres, needs_redis
from interview.testing import RunningServer, free_port, http_call, http_json, next_message


class Forwarder:
    """Forwards a local port to `target` until cut; restored on the same port."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self):
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", self.port, reuse_address=True)

    async def accept(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self):
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def poll(read, until, timeout=60):  # noqa: ASYNC109 - a safety net
    """Until `until(await read())`; a safety-net timeout (nothing signals these states)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await read()
            if until(value):
                return value
            await asyncio.sleep(0.1)


def health(server):
    return lambda: asyncio.to_thread(http_call, f"{server.url}/health")


@needs_redis
async def test_while_redis_is_down_one_process_keeps_serving_and_health_says_so(tmp_path):
    forwarder = Forwarder(REDIS)
    await forwarder.start()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{forwarder.port}/0",
        "REDIS_PREFIX": uuid.uuid4().hex,
        "WS_RATE_LIMIT_PER_SECOND": "1000",
        "WS_RATE_LIMIT_BURST": "1000",
    }
    server = await asyncio.to_thread(RunningServer(tmp_path, env=env).start)
    try:
        sid = (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {}))["sessionId"]
        url = f"{server.ws_url}/ws/sessions/{sid}"
        async with connect(url) as a, connect(url) as b:
            for ws, user in ((a, "a"), (b, "b")):
                await next_message(ws, "welcome")
                await ws.send(json.dumps({"type": "join", "userId": user, "data": {"name": user}}))
            await next_message(a, "user-joined")

            await forwarder.cut()
            status, body = await poll(health(server), lambda answer: answer[0] == 503)
            assert body["checks"]["channelLayer"]["ok"] is False

            # Clients of this process go on editing together: nothing of theirs needs Redis.
            await a.send(json.dumps({"type": "code-update", "data": {"code": "x = 1\n", "changes": []}}))
            assert (await next_message(a, "code-ack"))["data"]["version"] == 1
            assert (await next_message(b, "code-update"))["data"]["code"] == "x = 1\n"
            # REST works on the database, rate-limited requests included (no 500).
            status, _ = await asyncio.to_thread(
                http_call, f"{server.url}/api/sessions/{sid}/code", "POST", {"code": "saved\n"}
            )
            assert status == 200
            assert (await next_message(b, "code-update"))["data"]["code"] == "saved\n"
            status, _ = await asyncio.to_thread(http_call, f"{server.url}/api/sessions", "POST", {})
            assert status == 201

            await forwarder.start()
            await poll(health(server), lambda answer: answer[0] == 200)
            # A client connecting now is welcomed with everything acknowledged so far.
            async with connect(url) as c:
                welcome = await next_message(c, "welcome")
                assert (welcome["data"]["currentCode"], welcome["data"]["version"]) == ("saved\n", 2)
    finally:
        server.stop()
        await forwarder.cut()


@needs_postgres
async def test_while_postgresql_is_down_changes_are_refused_not_lost_and_rest_answers_503(tmp_path, postgres_database):
    forwarder = Forwarder(PG)
    await forwarder.start()
    env = {
        "DATABASE_URL": postgres_database.replace(":5432/", f":{forwarder.port}/"),
        "WS_RATE_LIMIT_PER_SECOND": "1000",
        "WS_RATE_LIMIT_BURST": "1000",
    }
    server = await asyncio.to_thread(RunningServer(tmp_path, env=env).start)
    try:
        sid = (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {}))["sessionId"]
        async with connect(f"{server.ws_url}/ws/sessions/{sid}") as a:
            await next_message(a, "welcome")
            await a.send(json.dumps({"type": "join", "userId": "a", "data": {"name": "A"}}))
            data = {"changes": [{"from": 0, "to": 0, "insert": "kept "}], "version": 0, "seq": 1}
            await a.send(json.dumps({"type": "code-update", "data": data}))
            assert (await next_message(a, "code-ack"))["data"]["version"] == 1

            await forwarder.cut()
            # An edit now is answered with an error, not acknowledged; REST answers 503.
            data = {"changes": [{"from": 0, "to": 0, "insert": "lost "}], "version": 1, "seq": 2}
            await a.send(json.dumps({"type": "code-update", "data": data}))
            error = await next_message(a, "error", "code-ack")
            assert error["type"] == "error"
            status, body = await asyncio.to_thread(http_call, f"{server.url}/api/sessions/{sid}/code")
            assert (status, body["error"]) == (503, "SERVICE_UNAVAILABLE")
            status, body = await asyncio.to_thread(http_call, f"{server.url}/health")
            assert status == 503 and body["checks"]["database"]["ok"] is False

            await forwarder.start()
            code = await poll(
                lambda: asyncio.to_thread(http_call, f"{server.url}/api/sessions/{sid}/code"),
                lambda answer: answer[0] == 200,
            )
            # What was acknowledged is there; the refused edit was not applied, and its
            # resend (same seq) is applied once.
            assert code[1]["code"].startswith("kept ") and "lost" not in code[1]["code"]
            await a.send(json.dumps({"type": "code-update", "data": data}))
            assert (await next_message(a, "code-ack"))["data"]["version"] == 2
    finally:
        server.stop()
        await forwarder.cut()
