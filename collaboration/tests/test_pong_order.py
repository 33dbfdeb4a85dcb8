"""Under the real server a pong comes after the answers to the code-updates its connection
sent before the ping, and a change that gets no answer of its own (superseded, or refused
at once) does not hold the pong back (it would wait WS_PONG_MAX_DELAY_SECONDS, here an hour)."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from interview.testing import RunningServer, http_json, next_message


@pytest.fixture(scope="module")
def gathering_server(tmp_path_factory):
    env = {
        # The writer waits 3 s for more after a change: what is sent meanwhile queues behind it.
        "WRITER_GATHER_SECONDS": "3",
        "WRITER_SUPERSEDE_AFTER_SECONDS": "0",
        "WRITER_MAX_QUEUED_PER_SESSION": "1",
        "WRITER_MAX_WAIT_SECONDS": "60",
        "WS_PONG_MAX_DELAY_SECONDS": "3600",
        "WS_RATE_LIMIT_PER_SECOND": "1000",
        "WS_RATE_LIMIT_BURST": "1000",
    }
    with RunningServer(tmp_path_factory.mktemp("pong"), env=env) as server:
        yield server


async def _joined(server):
    session = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
    ws = await connect(f"{server.ws_url}/ws/sessions/{session['sessionId']}")
    welcome = json.loads(await ws.recv())["data"]
    await ws.send(json.dumps({"type": "join", "userId": "alice", "data": {"name": "Alice"}}))
    return session["sessionId"], ws, welcome["version"], welcome["currentCode"]


async def _until_pong(ws) -> list[dict]:
    before = []
    while (message := await next_message(ws))["type"] != "pong":
        before.append(message)
    return before


async def test_superseded_texts_do_not_hold_the_pong(gathering_server):
    """Three full texts while the first waits for its round: the later ones supersede the one
    waiting, fewer acks come than texts, and the pong follows the last ack at once."""
    server = gathering_server
    sid, ws, version, _ = await _joined(server)
    async with ws:
        for text in ("t1", "t2", "t3"):
            await ws.send(json.dumps({"type": "code-update", "data": {"code": text, "changes": []}}))
        await ws.send(json.dumps({"type": "ping"}))
        acks = [m for m in await _until_pong(ws) if m["type"] == "code-ack"]
        assert 1 <= len(acks) < 3
        assert acks[-1]["data"]["version"] == version + len(acks)
    code = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code")
    assert (code["code"], code["version"]) == ("t3", version + len(acks))


async def test_a_change_refused_at_once_does_not_hold_the_pong(gathering_server):
    """With one change waiting in its session (the bound here), a second delta is refused at
    once with RATE_LIMIT_EXCEEDED; the pong comes after the first one's ack and that error."""
    server = gathering_server
    sid, ws, version, start = await _joined(server)
    async with ws:
        for seq, token in ((1, "a"), (2, "b")):
            change = {"changes": [{"from": 0, "insert": token}], "version": version, "seq": seq}
            await ws.send(json.dumps({"type": "code-update", "data": change}))
        await ws.send(json.dumps({"type": "ping"}))
        answers = {m["data"]["seq"]: m for m in await _until_pong(ws) if m["type"] in ("code-ack", "error")}
        assert answers[1]["type"] == "code-ack"
        assert (answers[2]["type"], answers[2]["data"]["code"]) == ("error", "RATE_LIMIT_EXCEEDED")
    code = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code")
    assert (code["code"], code["version"]) == ("a" + start, version + 1)
