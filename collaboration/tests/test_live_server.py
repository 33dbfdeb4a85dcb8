"""The protocol against the real server (daphne, as `make run` starts it) over real sockets."""

import asyncio
import json
import sqlite3

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from interview.testing import RunningServer, http_json, next_message
from sessions.document import apply


async def test_two_users_edit_through_daphne(live_server_process):
    """Two real WebSocket clients join, edit (full text and delta) and see each other's changes."""
    server = live_server_process
    session = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {"language": "python"})
    url = f"{server.ws_url}/ws/sessions/{session['sessionId']}"
    async with connect(url, origin="http://localhost:3001") as a, connect(url) as b:
        welcome_a = json.loads(await a.recv())
        welcome_b = json.loads(await b.recv())
        assert welcome_a["type"] == welcome_b["type"] == "welcome"
        await a.send(json.dumps({"type": "join", "userId": "alice", "data": {"name": "Alice"}}))
        joined = await next_message(b, "user-joined")
        assert joined["userId"] == "alice"
        code = welcome_a["data"]["currentCode"] + "x = 1\n"
        await a.send(json.dumps({"type": "code-update", "userId": "alice", "data": {"code": code, "changes": []}}))
        update = await next_message(b, "code-update")
        assert update["data"]["code"] == code
        version = update["data"]["version"]
        await b.send(json.dumps({"type": "join", "userId": "bob", "data": {"name": "Bob"}}))
        delta = [{"from": 0, "to": 0, "insert": "😀"}]
        await b.send(json.dumps({"type": "code-update", "data": {"changes": delta, "version": version}}))
        assert (await next_message(b, "code-ack"))["data"]["version"] == version + 1
        assert (await next_message(a, "code-update"))["data"]["code"] == "😀" + code
        code_url = f"{server.url}/api/sessions/{session['sessionId']}/code"
        await asyncio.to_thread(http_json, code_url, "POST", {"code": "saved"})
        assert (await next_message(a, "code-update"))["data"]["code"] == "saved"
        assert (await next_message(b, "code-update"))["data"]["code"] == "saved"
        body = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{session['sessionId']}")
        assert body["activeParticipants"] == 2


async def test_foreign_origin_is_refused_by_the_real_server(live_server_process):
    """A browser handshake from an origin outside CORS_ORIGINS is refused with 403."""
    session = await asyncio.to_thread(http_json, f"{live_server_process.url}/api/sessions", "POST", {})
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"{live_server_process.ws_url}/ws/sessions/{session['sessionId']}", origin="http://evil.example"
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_acknowledged_changes_survive_sigkill(tmp_path):
    """Every change acknowledged before the server is SIGKILLed is in the database after restart."""
    server = await asyncio.to_thread(RunningServer(tmp_path).start)
    try:
        session = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
        sid = session["sessionId"]
        acked: dict[int, int] = {}
        async with connect(f"{server.ws_url}/ws/sessions/{sid}") as ws:
            welcome = json.loads(await ws.recv())
            version = welcome["data"]["version"]
            await ws.send(json.dumps({"type": "join", "userId": "typist", "data": {"name": "T"}}))
            # A stream of deltas, each based on the version the previous ack gave.
            for seq in range(1, 41):
                change = [{"from": 0, "to": 0, "insert": f"{seq};"}]
                data = {"changes": change, "version": version, "seq": seq}
                await ws.send(json.dumps({"type": "code-update", "data": data}))
                ack = await next_message(ws, "code-ack")
                version = ack["data"]["version"]
                acked[seq] = version
                if seq == 30:
                    # Fire the rest without waiting, then kill the server mid-stream.
                    for more in range(31, 41):
                        change = [{"from": 0, "to": 0, "insert": f"{more};"}]
                        data = {"changes": change, "version": version, "seq": more}
                        await ws.send(json.dumps({"type": "code-update", "data": data}))
                    server.kill()
                    break
        server.process = None
        await asyncio.to_thread(server.start)
        code = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code")
        for seq in acked:
            assert f"{seq};" in code["code"]
        assert code["version"] >= max(acked.values())
        # The operation log rebuilds the stored document exactly.
        db = sqlite3.connect(tmp_path / "db.sqlite3")
        rows = db.execute(
            "SELECT version, changes FROM interview_sessions_documentoperation WHERE session_id = ? ORDER BY version",
            (sid.replace("-", ""),),
        ).fetchall()
        db.close()
        text = welcome["data"]["currentCode"]
        for _version, changes in rows:
            text = apply(text, json.loads(changes))
        assert text == code["code"]
        assert [r[0] for r in rows] == list(range(1, code["version"] + 1))
    finally:
        server.stop()
