"""`manage.py serve --workers N`: one port, N worker processes sharing PostgreSQL and Redis.

The server runs as a user runs it (the supervisor and its workers are real processes); the
clients are `websockets` clients doing client-side OT (OTClient). A client that loses its
connection reconnects with the same userId, resends exactly what it had in flight (same
seq, version and changes) and its last acknowledged change (which must be acknowledged
again with its first version, not applied again), reads the document, and types again what
it had queued and never sent. Every wait is for an event, under a safety-net timeout.
"""

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections import deque

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from collaboration.tests.otclient import OTClient
from collaboration.tests.services import REDIS_URL, needs_postgres_and_redis
from interview.testing import BASE_DIR, SERVER_PATIENCE_SECONDS, RunningServer, free_port, http_json, next_message

pytestmark = needs_postgres_and_redis

# Fast presence expiry, so a dead worker's users leave /participants within seconds.
PRESENCE_TTL_SECONDS = 4
FAST = {
    "WS_RATE_LIMIT_PER_SECOND": "1000",
    "WS_RATE_LIMIT_BURST": "1000",
    "PRESENCE_TTL_SECONDS": str(PRESENCE_TTL_SECONDS),
    "PRESENCE_HEARTBEAT_SECONDS": "1",
}
# The most connections opened to find one on each worker (the kernel's spread is uneven).
MAX_ATTEMPTS = 60


def worker_env(database_url: str, workers: int = 2) -> dict:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": uuid.uuid4().hex,  # this test's channels only
        "WORKERS": str(workers),
        **FAST,
    }


async def start(server: RunningServer) -> RunningServer:
    try:
        return await asyncio.to_thread(server.start)
    except BaseException:
        server.stop()
        raise


async def get(url: str):
    return await asyncio.to_thread(http_json, url)


def worker_pids(server: RunningServer) -> dict[int, list[int]]:
    """Each worker index's pids, in the order the parent started them (from its log)."""
    pids: dict[int, list[int]] = {}
    for index, pid in re.findall(r"Worker (\d+) started \(pid (\d+)\)", server.log_path.read_text()):
        pids.setdefault(int(index), []).append(int(pid))
    return pids


async def polled(read, holds) -> None:
    """Until `holds(await read())`, read every tenth of a second (under the caller's timeout):
    for what nothing signals (presence expiry, a log line)."""
    while not holds(await read()):  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.1)


def token_free_offsets(text: str) -> list[int]:
    """UTF-16 offsets between code points and outside every «...» token: an insert there
    (and, transformed, on every other client) never splits a token."""
    offsets, position, inside = [0], 0, False
    for ch in text:
        if ch == "«":
            inside = True
        position += 2 if ord(ch) > 0xFFFF else 1
        if ch == "»":
            inside = False
        if not inside:
            offsets.append(position)
    return offsets


class Progress:
    """Set `reached` once every editor has `each` edits acknowledged: then the test acts."""

    def __init__(self, each: int):
        self.each = each
        self.editors: list[Editor] = []
        self.reached = asyncio.Event()

    def acked(self) -> None:
        if self.editors and all(len(editor.acked) >= self.each for editor in self.editors):
            self.reached.set()


class Resync(Exception):
    """The server asked for a resync: the editor reconnects, as after a drop."""


class Editor:
    """One user editing through one WebSocket at a time, reconnecting when it drops."""

    def __init__(self, server: RunningServer, session_id: str, user_id: str, progress: Progress, *, reconnect=True):
        self.server = server
        self.session_id = session_id
        self.url = f"{server.ws_url}/ws/sessions/{session_id}"
        self.user_id = user_id
        self.progress = progress
        self.may_reconnect = reconnect
        self.rng = random.Random(f"{user_id}-{uuid.uuid4()}")
        self.ws = None
        self.worker: str | None = None
        self.client: OTClient | None = None
        self.pending: deque[str] = deque()  # tokens not yet acknowledged; the first is in flight when `sent` is set
        self.acked: list[str] = []
        self.sent: dict | None = None  # the code-update data in flight, exactly as sent
        self.last_acked: tuple[dict, int] | None = None  # (data as sent, version it became)
        self.seen: list[dict] = []  # every message received, in order
        self.close_codes: list[int | None] = []  # one per connection lost
        self.workers_used: list[str] = []
        self.resent_duplicates = 0  # resends acknowledged with their first version
        self.resyncs = 0
        self.closed = False  # lost and not reconnecting (or finished)
        self.ready = asyncio.Event()
        self.changed = asyncio.Condition()
        self.reader: asyncio.Task | None = None
        self.typed = 0

    # --- connection --------------------------------------------------------------------

    async def attach(self, ws) -> None:
        """Take an open socket: its welcome, then join."""
        self.ws = ws
        self.worker = ws.response.headers["X-Worker"]
        self.workers_used.append(self.worker)
        welcome = await next_message(ws, "welcome")
        self.client = OTClient.from_welcome(welcome)
        await ws.send(json.dumps({"type": "join", "userId": self.user_id, "data": {"name": self.user_id}}))
        self.ready.set()
        self.reader = asyncio.create_task(self.read())

    async def send(self, data: dict) -> None:
        # On a drop the reader reconnects, and what was in flight is resent then.
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps({"type": "code-update", "userId": self.user_id, "data": data}))

    async def read(self) -> None:
        try:
            while True:
                try:
                    message = json.loads(await self.ws.recv())
                    self.seen.append(message)
                    await self.handle(message)
                except (ConnectionClosed, Resync) as exc:
                    self.ready.clear()
                    if isinstance(exc, Resync):
                        self.resyncs += 1
                        await self.ws.close()
                    else:
                        self.close_codes.append(self.ws.close_code)
                    if not self.may_reconnect or self.closed:
                        self.closed = True
                        return
                    await self.rejoin()
                async with self.changed:
                    self.changed.notify_all()
        finally:
            async with self.changed:
                self.changed.notify_all()

    async def handle(self, message: dict) -> None:
        kind = message["type"]
        if kind == "code-update":
            if message["data"]["version"] > self.client.version:  # else the document read held it
                self.client.receive(message)
        elif kind == "code-ack":
            assert self.sent is not None, message
            assert message["data"].get("seq") == self.sent["seq"], (message, self.sent)
            self.took_ack(message["data"]["version"])
            outgoing = self.client.receive(message)
            if outgoing:
                self.sent = outgoing
                await self.send(outgoing)
        elif kind == "error":
            if message["data"]["code"] == "RESYNC_REQUIRED":
                raise Resync()
            raise AssertionError(message)

    def took_ack(self, version: int) -> None:
        self.acked.append(self.pending.popleft())
        self.last_acked = (self.sent, version)
        self.sent = None
        self.progress.acked()

    async def rejoin(self) -> None:
        """Reconnect as the same user; resend what is in flight and the last acknowledged
        change; start from the document as it is now; type again what was never sent."""
        for _attempt in range(MAX_ATTEMPTS):
            try:
                ws = await connect(self.url, open_timeout=SERVER_PATIENCE_SECONDS)
                break
            except (OSError, InvalidHandshake):
                # A connection the dying worker had accepted: try again (the kernel hands
                # the next one to a live worker).
                continue
        else:
            raise AssertionError("could not reconnect")
        self.ws = ws
        self.worker = ws.response.headers["X-Worker"]
        self.workers_used.append(self.worker)
        welcome = await next_message(ws, "welcome")
        await ws.send(json.dumps({"type": "join", "userId": self.user_id, "data": {"name": self.user_id}}))
        later: list[dict] = []  # others' changes arriving meanwhile

        async def answer_to(data: dict) -> dict:
            await ws.send(json.dumps({"type": "code-update", "userId": self.user_id, "data": data}))
            while True:
                message = await next_message(ws)
                self.seen.append(message)
                if message["type"] == "code-update":
                    later.append(message)
                elif message["type"] == "error" or (
                    message["type"] == "code-ack" and message["data"].get("seq") == data["seq"]
                ):
                    return message

        floor = welcome["data"]["version"]
        if self.last_acked is not None:
            data, version = self.last_acked
            answer = await answer_to(data)
            assert answer["type"] == "code-ack", answer
            # Acknowledged again with the version it took the first time: not applied twice.
            assert answer["data"]["version"] == version, (answer, version)
            self.resent_duplicates += 1
        if self.sent is not None:
            answer = await answer_to(self.sent)
            if answer["type"] == "code-ack":
                if answer["data"]["version"] <= floor:
                    self.resent_duplicates += 1  # it had committed before the drop
                floor = max(floor, answer["data"]["version"])
                self.took_ack(answer["data"]["version"])
            else:
                # Not applied (for instance too far behind): typed again below.
                assert answer["data"]["code"] == "RESYNC_REQUIRED", answer
                self.sent = None
        code = await get(f"{self.server.url}/api/sessions/{self.session_id}/code")
        # Acknowledged means committed: the document read now holds all of it.
        assert code["version"] >= floor, (code, floor)
        seq = self.client.seq
        self.client = OTClient(code["code"], code["version"])
        self.client.seq = seq
        for message in later:
            if message["data"]["version"] > self.client.version:
                self.client.receive(message)
        unsent, self.pending = list(self.pending), deque()
        for token in unsent:
            await self.type_token(token)
        self.ready.set()

    # --- typing --------------------------------------------------------------------------

    async def type_token(self, token: str) -> None:
        position = self.rng.choice(token_free_offsets(self.client.text))
        self.pending.append(token)
        outgoing = self.client.edit([{"from": position, "to": position, "insert": token}])
        if outgoing:
            self.sent = outgoing
            await self.send(outgoing)

    async def type(self, count: int) -> None:
        """Insert `count` tokens at random places, keeping up to three edits unacknowledged."""
        for n in range(count):
            unacknowledged = self.rng.randint(0, 2)
            await self.until(
                lambda most=unacknowledged: self.closed or (self.ready.is_set() and len(self.pending) <= most)
            )
            if self.closed:
                return
            self.typed += 1
            await self.type_token(f"«{self.user_id}.{n}😀»")
        await self.until(lambda: self.closed or (self.ready.is_set() and not self.pending))

    async def until(self, condition) -> None:
        """Wait until `condition()` holds (checked after each message); the reader's failure raises."""
        async with self.changed:
            await self.changed.wait_for(lambda: condition() or self.reader.done())
        if not condition():
            self.reader.result()  # its exception, if it failed
            raise AssertionError(f"{self.user_id}: the connection ended before the wait was over")

    async def stop(self) -> None:
        self.closed = True
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, SERVER_PATIENCE_SECONDS)


async def open_on_workers(server: RunningServer, session_id: str, wanted: dict[str, int]) -> dict[str, list]:
    """Open WebSockets until each worker index in `wanted` holds its number of them; the
    extra ones are closed."""
    kept: dict[str, list] = {index: [] for index in wanted}
    extra = []
    for _attempt in range(MAX_ATTEMPTS):
        if all(len(kept[index]) >= count for index, count in wanted.items()):
            break
        ws = await connect(f"{server.ws_url}/ws/sessions/{session_id}")
        index = ws.response.headers["X-Worker"]
        if len(kept.get(index, ())) < wanted.get(index, 0):
            kept[index].append(ws)
        else:
            extra.append(ws)
    for ws in extra:
        await ws.close()
    assert all(len(kept[index]) >= count for index, count in wanted.items()), (
        f"{MAX_ATTEMPTS} connections did not reach every worker: { ({i: len(s) for i, s in kept.items()}) }"
    )
    return kept


async def converge(server: RunningServer, session_id: str, editors: list[Editor]) -> dict:
    """Once every editor's edits are acknowledged: each plays the broadcasts up to the
    server's version; the server's code."""
    code = await get(f"{server.url}/api/sessions/{session_id}/code")
    for editor in editors:
        await editor.until(lambda e=editor: e.client.version >= code["version"])
    return code


def assert_tokens_once(code: str, editors: list[Editor]) -> None:
    for editor in editors:
        assert not editor.pending and editor.sent is None, editor.user_id
        for token in editor.acked:
            assert code.count(token) == 1, (token, code)
    found = re.findall(r"«[^»]*»", code)
    assert sorted(found) == sorted(token for editor in editors for token in editor.acked)


async def test_two_workers_behind_one_port(tmp_path, postgres_database):
    """Clients spread over both workers edit concurrently, converge, are all participants,
    and hear a REST save and a language change whichever worker answered it."""
    server = await start(RunningServer(tmp_path, env=worker_env(postgres_database)))
    editors: list[Editor] = []
    try:
        health = await get(f"{server.url}/health")
        assert health["server"]["workers"] == 2
        assert health["server"]["worker"] in (1, 2)
        assert health["server"]["channelLayer"] == "redis"
        assert health["server"]["database"] == "postgresql"
        assert health["checks"]["channelLayer"]["ok"] is True

        session_id = (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {}))["sessionId"]
        sockets = await open_on_workers(server, session_id, {"1": 2, "2": 1})
        progress = Progress(each=0)
        async with asyncio.timeout(SERVER_PATIENCE_SECONDS):
            for n, ws in enumerate([*sockets["1"], *sockets["2"]]):
                editor = Editor(server, session_id, f"user{n}", progress)
                await editor.attach(ws)
                editors.append(editor)
            progress.editors = editors
            assert sorted(e.worker for e in editors) == ["1", "1", "2"]
            await asyncio.gather(*(editor.type(20) for editor in editors))
            code = await converge(server, session_id, editors)
        assert all(not e.close_codes and not e.resyncs for e in editors), "no connection was lost"
        assert [e.client.text for e in editors] == [code["code"]] * 3
        assert code["version"] == 60
        assert_tokens_once(code["code"], editors)

        participants = await get(f"{server.url}/api/sessions/{session_id}/participants")
        assert sorted(p["userId"] for p in participants["participants"]) == ["user0", "user1", "user2"]

        await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{session_id}/code", "POST", {"code": "saved"})
        await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{session_id}", "PATCH", {"language": "java"})

        def heard(editor):
            return any(m["type"] == "code-update" and m["data"].get("code") == "saved" for m in editor.seen) and any(
                m["type"] == "language-changed" and m["data"]["language"] == "java" for m in editor.seen
            )

        async with asyncio.timeout(SERVER_PATIENCE_SECONDS):
            for editor in editors:
                await editor.until(lambda e=editor: heard(e))
        assert [e.client.text for e in editors] == ["saved"] * 3
    finally:
        for editor in editors:
            await editor.stop()
        server.stop()


async def test_killed_worker_clients_reconnect_and_lose_nothing(tmp_path, postgres_database):
    """kill -9 of a worker mid-edit: its clients reconnect and resend, nothing acknowledged
    is lost or doubled, its silent user leaves /participants after the presence TTL, and
    the parent starts a new worker in its place."""
    server = await start(RunningServer(tmp_path, env=worker_env(postgres_database)))
    editors: list[Editor] = []
    silent = None
    try:
        session_id = (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {}))["sessionId"]
        # Worker 1 dies: it holds two editors and a user who will not come back.
        sockets = await open_on_workers(server, session_id, {"1": 3, "2": 2})
        victim_pid = worker_pids(server)[1][-1]
        edits_each = 25
        progress = Progress(each=3)  # the kill comes once a few edits of each went through
        async with asyncio.timeout(SERVER_PATIENCE_SECONDS):
            silent = sockets["1"].pop()
            await next_message(silent, "welcome")
            await silent.send(json.dumps({"type": "join", "userId": "silent", "data": {"name": "Silent"}}))
            for n, ws in enumerate([*sockets["1"], *sockets["2"]]):
                editor = Editor(server, session_id, f"user{n}", progress)
                await editor.attach(ws)
                editors.append(editor)
            progress.editors = editors
            on_victim, on_survivor = editors[:2], editors[2:]
            listed = {"silent", *(e.user_id for e in editors)}

            async def participants() -> set:
                answer = await get(f"{server.url}/api/sessions/{session_id}/participants")
                return {p["userId"] for p in answer["participants"]}

            await polled(participants, lambda users: users == listed)  # joins apply in the background

            typing = asyncio.gather(*(editor.type(edits_each) for editor in editors))
            await progress.reached.wait()
            os.kill(victim_pid, signal.SIGKILL)
            await typing
            code = await converge(server, session_id, editors)

        assert [e.client.text for e in editors] == [code["code"]] * 4
        assert code["version"] == 4 * edits_each
        assert_tokens_once(code["code"], editors)
        for editor in on_victim:
            assert editor.close_codes[:1] == [1006], (editor.user_id, editor.close_codes)  # dropped, no close frame
            assert editor.resent_duplicates >= 1  # its last acknowledged change, resent, was not applied again
        for editor in on_survivor:
            assert not editor.close_codes, (editor.user_id, editor.close_codes)

        # The silent user's connection died with its worker: it expires from the presence.
        async with asyncio.timeout(PRESENCE_TTL_SECONDS + SERVER_PATIENCE_SECONDS):
            await polled(participants, lambda users: "silent" not in users)
        assert await participants() == listed - {"silent"}

        # The parent noticed and started a new worker 1.
        async def restarts() -> list[int]:
            return worker_pids(server).get(1, [])

        async with asyncio.timeout(SERVER_PATIENCE_SECONDS):
            await polled(restarts, lambda pids: len(pids) >= 2)
        log = server.log_path.read_text()
        assert f"Worker 1 (pid {victim_pid}) killed by SIGKILL; starting a new one" in log
        new_pid = worker_pids(server)[1][-1]
        assert new_pid != victim_pid
        os.kill(new_pid, 0)  # it runs
        async with asyncio.timeout(SERVER_PATIENCE_SECONDS):
            while True:  # until the kernel hands a request to the new worker once it serves
                health = await get(f"{server.url}/health")
                if health["server"]["worker"] == 1:
                    assert health["server"]["pid"] == new_pid
                    break
    finally:
        for editor in editors:
            await editor.stop()
        if silent is not None:
            await silent.close()
        server.stop()


async def test_sigterm_closes_with_1012_and_keeps_what_was_acknowledged(tmp_path, postgres_database):
    """SIGTERM of the parent while clients edit: each gets 1012, the parent exits 0, and a
    fresh server on the same database holds every acknowledged change once."""
    (tmp_path / "workers").mkdir()
    (tmp_path / "after").mkdir()
    server = await start(RunningServer(tmp_path / "workers", env=worker_env(postgres_database)))
    editors: list[Editor] = []
    after = None
    try:
        session_id = (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {}))["sessionId"]
        sockets = await open_on_workers(server, session_id, {"1": 2, "2": 2})
        progress = Progress(each=5)
        async with asyncio.timeout(SERVER_PATIENCE_SECONDS):
            for n, ws in enumerate([*sockets["1"], *sockets["2"]]):
                editor = Editor(server, session_id, f"user{n}", progress, reconnect=False)
                await editor.attach(ws)
                editors.append(editor)
            progress.editors = editors
            # More edits than can be made before the server stops: they are still typing.
            typing = asyncio.gather(*(editor.type(100_000) for editor in editors))
            await progress.reached.wait()
            server.process.send_signal(signal.SIGTERM)
            await typing
            status = await asyncio.to_thread(server.process.wait, SERVER_PATIENCE_SECONDS)
        assert [e.close_codes for e in editors] == [[1012]] * 4
        assert all(e.typed < 100_000 for e in editors)
        assert status == 0, server.log_path.read_text()[-3000:]
        log = server.log_path.read_text()
        assert "Worker 1 (pid" in log and "Worker 2 (pid" in log and log.count(") stopped") == 2, log[-3000:]

        env = {"DATABASE_URL": postgres_database, **FAST}
        after = await start(RunningServer(tmp_path / "after", env=env))
        code = (await get(f"{after.url}/api/sessions/{session_id}/code"))["code"]
        acked = [token for editor in editors for token in editor.acked]
        assert len(acked) >= 4 * progress.each
        for token in acked:
            assert code.count(token) == 1, token
        # What was in flight when the connection closed is there at most once.
        for editor in editors:
            for token in editor.pending:
                assert code.count(token) <= 1, token
    finally:
        for editor in editors:
            await editor.stop()
        server.stop()
        if after is not None:
            after.stop()


def serve(tmp_path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, int]:
    """`manage.py serve` as a user starts it, with only `env` configuring it (beyond a free
    port, a secret key file and a SQLite database); its completed process and its port."""
    port = free_port()
    ours = ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "WORKERS", "WORKER_INDEX", "DATABASE_URL")
    environment = {name: value for name, value in os.environ.items() if name not in ours}
    environment.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SECRET_KEY_FILE": str(tmp_path / "secret_key"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "serve", *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, port


def assert_refused(done: subprocess.CompletedProcess, port: int, sentence: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert sentence in output, output
    assert "Serving on" not in output and "Worker 1 started" not in output, output
    with socket.socket() as sock:  # nothing holds the port it was given
        sock.bind(("127.0.0.1", port))


def test_workers_without_redis_are_refused(tmp_path):
    done, port = serve(tmp_path, "--workers", "2")
    assert_refused(done, port, "2 workers need REDIS_URL")


def test_unreachable_redis_is_refused(tmp_path):
    done, port = serve(tmp_path, "--workers", "2", REDIS_URL="redis://127.0.0.1:1/0")
    assert_refused(done, port, "Redis is unreachable at REDIS_URL")
    # One process with an unreachable Redis is refused too.
    done, port = serve(tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert_refused(done, port, "Redis is unreachable at REDIS_URL")


def test_unreachable_database_is_refused(tmp_path):
    done, port = serve(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:1/nothing")
    assert_refused(done, port, "The database is unreachable")
    done, port = serve(
        tmp_path, "--workers", "2", DATABASE_URL="postgres://postgres@127.0.0.1:1/nothing", REDIS_URL=REDIS_URL
    )
    assert_refused(done, port, "The database is unreachable")


def test_token_free_offsets():
    """The offsets editors insert at never fall inside a token (the checks above rely on it)."""
    assert token_free_offsets("ab«x.1😀»c«y»") == [0, 1, 2, 9, 10, 13]
