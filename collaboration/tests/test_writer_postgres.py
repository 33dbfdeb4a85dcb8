"""The writer on PostgreSQL, where a round writes all its sessions' documents, operations,
checkpoints and edit entries in one statement each: the real server, as users run it."""

import asyncio
import json

from websockets.asyncio.client import connect

from collaboration.tests.services import needs_postgres
from interview.testing import RunningServer, http_json, next_message

pytestmark = needs_postgres

SESSIONS = 3
ENV = {
    "WS_RATE_LIMIT_PER_SECOND": "1000",
    "WS_RATE_LIMIT_BURST": "1000",
    # Changes sent together share a round: the round's sessions are written together.
    "WRITER_GATHER_SECONDS": "0.3",
    "DOCUMENT_CHECKPOINT_INTERVAL": "2",
}


async def edit_all(sockets: list, versions: list[int], text: str) -> None:
    """Each socket inserts `text` at the start of its session's document, all at once; each
    waits for its ack (the new version goes into `versions`)."""
    for ws, version in zip(sockets, versions, strict=True):
        change = {"from": 0, "to": 0, "insert": text}
        await ws.send(
            json.dumps({"type": "code-update", "userId": "ann", "data": {"changes": [change], "version": version}})
        )
    for index, ws in enumerate(sockets):
        versions[index] = (await next_message(ws, "code-ack"))["data"]["version"]


async def test_a_round_of_many_sessions_writes_each_of_them(tmp_path, postgres_database):
    """Sessions edited in the same rounds each get their text, log, checkpoints and edit
    entries; a burst ended in one session (a title change) starts a new entry there only."""
    server = await asyncio.to_thread(RunningServer(tmp_path, env={"DATABASE_URL": postgres_database, **ENV}).start)
    try:
        ids = [
            (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {"language": "python"}))[
                "sessionId"
            ]
            for _ in range(SESSIONS)
        ]
        sockets = [await connect(f"{server.ws_url}/ws/sessions/{sid}") for sid in ids]
        try:
            versions = []
            for ws in sockets:
                versions.append((await next_message(ws, "welcome"))["data"]["version"])
                await ws.send(json.dumps({"type": "join", "userId": "ann", "data": {"name": "Ann"}}))
            await edit_all(sockets, versions, "a")
            url = f"{server.url}/api/sessions/{ids[0]}"
            await asyncio.to_thread(http_json, url, "PATCH", {"title": "Ends the burst"})
            await edit_all(sockets, versions, "b")
            await edit_all(sockets, versions, "c")
        finally:
            for ws in sockets:
                await ws.close()
        assert versions == [3] * SESSIONS
        for index, sid in enumerate(ids):
            base = f"{server.url}/api/sessions/{sid}"
            code = await asyncio.to_thread(http_json, f"{base}/code")
            starter = (await asyncio.to_thread(http_json, f"{base}/code?version=0"))["code"]
            assert code["code"] == "cba" + starter
            assert (await asyncio.to_thread(http_json, f"{base}/code?version=2"))["code"] == "ba" + starter
            history = (await asyncio.to_thread(http_json, f"{base}/history"))["history"]
            kinds = [(entry["changeType"], entry["description"]) for entry in history]
            if index == 0:
                assert kinds == [
                    ("edit", "Edited the code (1 change)"),
                    ("title-change", 'Changed the title from none to "Ends the burst"'),
                    ("edit", "Edited the code (2 changes)"),
                ]
            else:
                assert kinds == [("edit", "Edited the code (3 changes)")]
            timeline = await asyncio.to_thread(http_json, f"{base}/timeline")
            assert [item["version"] for item in timeline["items"] if item["type"] == "change"] == [1, 2, 3]
    finally:
        server.stop()
