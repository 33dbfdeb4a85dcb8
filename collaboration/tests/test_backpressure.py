"""A socket that never reads cannot make the server hold more than WS_MAX_BUFFERED_BYTES for it."""

import asyncio
import base64
import json
import os
import socket
import struct
import time

import pytest
from websockets.asyncio.client import connect

from collaboration.layers import FastInMemoryChannelLayer
from interview.testing import RunningServer, http_json

BUFFER_LIMIT = 2 * 1024 * 1024
DOCUMENT = "".join(f"{i:07d} the quick brown fox jumps over the lazy dog\n" for i in range(4_000))  # ~200 KB


class TestLayerBytes:
    async def test_a_channel_holds_at_most_max_bytes_of_text(self):
        """Beyond max_bytes of queued text a channel counts as full; one message always fits."""
        layer = FastInMemoryChannelLayer(capacity=100, max_bytes=1000)
        name = await layer.new_channel()
        await layer.group_add("g", name)
        for _ in range(5):
            await layer.group_send("g", {"type": "m", "text": "x" * 300})
        assert layer.dropped == 2
        assert [len((await layer.receive(name))["text"]) for _ in range(3)] == [300, 300, 300]
        assert layer.queued_bytes == {}
        await layer.group_send("g", {"type": "m", "text": "y" * 5000})
        assert (await layer.receive(name))["text"] == "y" * 5000


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _frame(payload: dict) -> bytes:
    """A masked text frame, as a client must send it."""
    data = json.dumps(payload).encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(data) < 126:
        header += bytes([0x80 | len(data)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(data))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _open_silent_socket(port: int, session_id: str) -> socket.socket:
    """A WebSocket client that handshakes, joins, and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/sessions/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: not one byte past the handshake is read
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(_frame({"type": "join", "userId": "sloth", "data": {"name": "Sloth"}}))
    return sock


def _drain(sock: socket.socket, deadline: float) -> tuple[int, str]:
    """Read what the server sent until it closes the connection; (bytes read, how it ended)."""
    sock.settimeout(1)
    total = 0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return total, "reset"
        if not chunk:
            return total, "closed"
        total += len(chunk)
    return total, "still open"


async def _edit_acked(editor, seq: int, version: int) -> int:
    """Replace the document's first 7 characters with `seq`; the version its ack gives."""
    change = [{"from": 0, "to": 7, "insert": f"{seq:07d}"}]
    await editor.send(json.dumps({"type": "code-update", "data": {"changes": change, "version": version}}))
    while True:
        message = json.loads(await editor.recv())
        if message["type"] == "code-ack":
            return message["data"]["version"]


@pytest.fixture
def buffer_server(tmp_path):
    env = {
        "WS_MAX_BUFFERED_BYTES": str(BUFFER_LIMIT),
        "WS_RATE_LIMIT_PER_SECOND": "1000",
        "WS_RATE_LIMIT_BURST": "1000",
    }
    with RunningServer(tmp_path, env=env) as server:
        yield server


async def test_a_socket_that_never_reads_is_closed_and_memory_stays_bounded(buffer_server):
    """While two clients edit a 200 KB document (every broadcast carries it whole), a client that
    pings but never reads is closed once the server holds WS_MAX_BUFFERED_BYTES for it; the
    server's RSS grows by less than 64 MB (without the bound: the document once per edit, ~100 MB
    for these 500 edits) and the others keep working."""
    server = buffer_server
    session = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
    sid = session["sessionId"]
    await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code", "POST", {"code": DOCUMENT})
    url = f"{server.ws_url}/ws/sessions/{sid}"
    async with connect(url, max_size=None) as editor, connect(url, max_size=None) as reader:
        version = json.loads(await editor.recv())["data"]["version"]
        await reader.recv()
        # A connection edits as the user it joined as.
        await editor.send(json.dumps({"type": "join", "userId": "editor", "data": {"name": "Editor"}}))
        sloth = await asyncio.to_thread(_open_silent_socket, server.port, sid)
        baseline = _rss_bytes(server.process.pid)
        peak = baseline
        received = 0
        all_received = asyncio.Event()
        cut = False

        async def read():
            nonlocal received
            async for frame in reader:
                if json.loads(frame)["type"] == "code-update":
                    received += 1
                    if received == 500:
                        all_received.set()

        reading = asyncio.ensure_future(read())
        try:
            for seq in range(1, 501):
                version = await _edit_acked(editor, seq, version)
                if seq % 10 == 0:
                    peak = max(peak, _rss_bytes(server.process.pid))
                    if not cut:
                        # The silent client keeps pinging, as in the issue, so it is never idle.
                        try:
                            await asyncio.to_thread(sloth.sendall, _frame({"type": "ping"}))
                        except OSError:
                            cut = True  # the server has dropped it already
            async with asyncio.timeout(60):  # a safety net: the event is the 500th update
                await all_received.wait()
        finally:
            reading.cancel()
        # The server closed the silent socket: reading it now ends, after a bounded amount.
        read_back, ending = await asyncio.to_thread(_drain, sloth, time.monotonic() + 30)
        sloth.close()
        code = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code")
    growth = peak - baseline
    print(f"RSS: baseline {baseline >> 20} MB, peak {peak >> 20} MB (+{growth >> 20} MB)")
    print(f"silent socket: {ending} after {read_back} bytes")
    assert ending in ("closed", "reset")
    assert read_back < BUFFER_LIMIT + 8 * 1024 * 1024  # the bound, plus what the kernels held
    assert growth < 64 * 1024 * 1024
    assert "closing it with 1013" in server.log_path.read_text()
    assert received == 500
    assert code["code"].startswith("0000500")


@pytest.fixture
def resync_server(tmp_path):
    env = {
        "WS_RESYNC_BUFFERED_BYTES": str(256 * 1024),
        "WS_MAX_BUFFERED_BYTES": str(256 * 1024 * 1024),
        "WS_RATE_LIMIT_PER_SECOND": "1000",
        "WS_RATE_LIMIT_BURST": "1000",
    }
    with RunningServer(tmp_path, env=env) as server:
        yield server


def _small_buffer_socket(port: int) -> socket.socket:
    """A connected TCP socket with a small receive buffer, so what it leaves unread stays on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_a_slow_reader_is_resynced_and_converges_while_fast_ones_get_everything(resync_server):
    """A client that stops reading while a 200 KB document is edited 60 times falls more than
    WS_RESYNC_BUFFERED_BYTES behind: it gets RESYNC_REQUIRED with the current document once it
    reads again (not a gap, not a close) and ends with the server's text; a client that reads
    gets all 60 code-updates, in order."""
    server = resync_server
    session = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
    sid = session["sessionId"]
    await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code", "POST", {"code": DOCUMENT})
    url = f"{server.ws_url}/ws/sessions/{sid}"
    edits = 60
    sock = await asyncio.to_thread(_small_buffer_socket, server.port)
    async with (
        connect(url, max_size=None) as editor,
        connect(url, max_size=None) as fast,
        connect(url, max_size=None, max_queue=1, sock=sock) as slow,
    ):
        version = json.loads(await editor.recv())["data"]["version"]
        await fast.recv()
        slow_welcome = json.loads(await slow.recv())["data"]
        await editor.send(json.dumps({"type": "join", "userId": "editor", "data": {"name": "Editor"}}))
        fast_versions: list[int] = []
        fast_done = asyncio.Event()

        async def read_fast():
            async for frame in fast:
                message = json.loads(frame)
                if message["type"] == "code-update":
                    fast_versions.append(message["data"]["version"])
                    if len(fast_versions) == edits:
                        fast_done.set()

        reading = asyncio.ensure_future(read_fast())
        try:
            for seq in range(1, edits + 1):
                version = await _edit_acked(editor, seq, version)
            async with asyncio.timeout(60):  # a safety net: the event is the last update
                await fast_done.wait()
        finally:
            reading.cancel()
        final = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code")
        # The slow client reads now: what it holds, then the resync, then nothing it must skip.
        text, held_version, resyncs = slow_welcome["currentCode"], slow_welcome["version"], 0
        async with asyncio.timeout(60):  # a safety net: the loop ends at the server's version
            while held_version < final["version"]:
                message = json.loads(await slow.recv())
                data = message["data"]
                if message["type"] == "code-update":
                    assert data["version"] == held_version + 1, "a code-update out of turn"
                    text, held_version = data["code"], data["version"]
                elif message["type"] == "error":
                    assert data["code"] == "RESYNC_REQUIRED", data
                    assert data["version"] >= held_version
                    text, held_version, resyncs = data["currentCode"], data["version"], resyncs + 1
    assert fast_versions == list(range(fast_versions[0], fast_versions[0] + edits))
    assert resyncs == 1
    assert (text, held_version) == (final["code"], final["version"])
    assert "closing it with 1013" not in server.log_path.read_text()
