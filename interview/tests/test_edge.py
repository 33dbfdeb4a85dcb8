"""The server's edge: client addresses behind proxies, chunked bodies, unknown WebSocket paths
and frame sizes, checked on the real server (`manage.py serve`, as `make run` starts it)."""

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys

import pytest
from channels.testing import WebsocketCommunicator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from interview.middleware import ForwardedClientMiddleware, forwarded_client
from interview.testing import BASE_DIR, RunningServer, assert_error, http_call, next_message

LIMITED_RATES = {"RATE_SESSION_CREATE": "2/minute", "RATE_CODE_SAVE": "2/minute", "RATE_EXECUTION": "2/minute"}


def chunked(server, method, path, chunks: list[bytes]) -> tuple[int, dict]:
    """Send a request whose body is `Transfer-Encoding: chunked` over a raw socket."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """The real server with the documented setting (no NUM_PROXIES) and two requests a minute."""
    with RunningServer(tmp_path_factory.mktemp("limited"), env=LIMITED_RATES) as server:
        yield server


# --- Finding 6: a forged X-Forwarded-For never splits a rate limit ----------------------------


def test_num_proxies_defaults_to_zero_not_none(settings):
    """NUM_PROXIES unset is 0 for DRF (None would make DRF trust X-Forwarded-For)."""
    from rest_framework.settings import api_settings

    assert settings.NUM_PROXIES == 0
    assert api_settings.NUM_PROXIES == 0


def test_negative_num_proxies_refuses_to_start():
    """A negative proxy count is a configuration error, not a silent default."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "NUM_PROXIES": "-1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "NUM_PROXIES" in result.stderr


@pytest.mark.parametrize("scope", ["session_create", "code_save", "execution"])
def test_forged_forwarded_for_shares_the_limit_of_its_address(api, make_session, settings, scope):
    """Without proxies in front, requests from one address share a limit whatever X-Forwarded-For says."""
    sid = make_session()["sessionId"]
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, scope: "2/minute"}
    path, body = {
        "session_create": ("/api/sessions", {}),
        "code_save": (f"/api/sessions/{sid}/code", {"code": "x = 1\n"}),
        "execution": ("/api/execute", {"code": "", "language": "python"}),  # 400, but counted
    }[scope]
    statuses = [
        api.post(path, body, format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code for i in range(3)
    ]
    assert statuses[2] == 429, statuses


def test_behind_a_proxy_only_the_hop_it_added_counts(api, db, settings):
    """With NUM_PROXIES=1 the address the proxy appended is the key; what the client wrote is not."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "session_create": "1/minute"}
    assert api.post("/api/sessions", {}, HTTP_X_FORWARDED_FOR="1.1.1.1, 10.0.0.7").status_code == 201
    assert api.post("/api/sessions", {}, HTTP_X_FORWARDED_FOR="2.2.2.2, 10.0.0.7").status_code == 429
    assert api.post("/api/sessions", {}, HTTP_X_FORWARDED_FOR="1.1.1.1, 10.0.0.8").status_code == 201


@pytest.mark.parametrize(
    ("header", "num_proxies", "expected"),
    [
        ("6.6.6.6", 0, None),
        ("6.6.6.6, 10.0.0.7", 1, "10.0.0.7"),
        ("6.6.6.6, 10.0.0.7, 10.0.0.1", 2, "10.0.0.7"),
        ("10.0.0.7", 3, "10.0.0.7"),
        (" , ", 1, None),
    ],
)
def test_forwarded_client_takes_the_trusted_hop(header, num_proxies, expected):
    """The client is the entry NUM_PROXIES from the end, never one the client wrote before it."""
    assert forwarded_client(header, num_proxies) == expected


@pytest.mark.parametrize(("num_proxies", "client"), [(0, ["127.0.0.1", 5000]), (1, ["10.0.0.7", 0])])
@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_scope_client_follows_num_proxies(settings, num_proxies, client, kind):
    """REMOTE_ADDR and a WebSocket's peer come from X-Forwarded-For only behind NUM_PROXIES proxies."""
    settings.NUM_PROXIES = num_proxies
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {
        "type": kind,
        "client": ["127.0.0.1", 5000],
        "headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"10.0.0.7")],
    }
    await ForwardedClientMiddleware(app)(scope, None, None)
    assert seen["client"] == client


def test_forged_forwarded_for_is_limited_on_the_real_server(limited_server):
    """On `manage.py serve`, forged X-Forwarded-For headers share one address's creation, save and run limits."""
    url = limited_server.url
    statuses = [
        http_call(f"{url}/api/sessions", "POST", {}, {"X-Forwarded-For": f"198.51.100.{i}"})[0] for i in range(3)
    ]
    assert statuses == [201, 201, 429]
    # The creation budget is spent; the session to save into comes from the database directly.
    sid = limited_server.manage(
        "shell", "-c", "from sessions.services import session_create; print(session_create().id)"
    ).stdout.split()[-1]
    code_url = f"{url}/api/sessions/{sid}/code"
    statuses = [
        http_call(code_url, "POST", {"code": f"x = {i}\n"}, {"X-Forwarded-For": f"10.9.9.{i}"})[0] for i in range(3)
    ]
    assert statuses == [200, 200, 429]
    runs = [
        http_call(
            f"{url}/api/execute", "POST", {"code": "print(1)", "language": "python"}, {"X-Forwarded-For": f"10.8.{i}.1"}
        )
        for i in range(3)
    ]
    assert [status for status, _ in runs] == [200, 200, 429]
    assert_error(runs[2][1], 429, "RATE_LIMIT_EXCEEDED")


# --- Finding 9: chunked request bodies are read, within the size limit ------------------------


def test_chunked_session_creation_uses_the_body(live_server_process):
    """POST /api/sessions with a chunked JSON body creates the session the body describes."""
    body = json.dumps({"language": "python", "title": "Chunked"}).encode()
    status, session = chunked(live_server_process, "POST", "/api/sessions", [body[:7], body[7:]])
    assert status == 201, session
    assert (session["language"], session["title"]) == ("python", "Chunked")


def test_chunked_code_save_is_stored(live_server_process):
    """A chunked code save stores the code it carries."""
    url = live_server_process.url
    _, session = http_call(f"{url}/api/sessions", "POST", {"language": "python"})
    sid = session["sessionId"]
    body = json.dumps({"code": "print('chunked')\n"}).encode()
    status, receipt = chunked(live_server_process, "POST", f"/api/sessions/{sid}/code", [body[:3], body[3:]])
    assert status == 200, receipt
    assert http_call(f"{url}/api/sessions/{sid}/code")[1]["code"] == "print('chunked')\n"


def test_chunked_body_over_the_limit_is_413(live_server_process, settings):
    """A chunked body over MAX_REQUEST_BODY_BYTES answers 413 in the error shape, as a sized one does."""
    limit = settings.MAX_REQUEST_BODY_BYTES  # the server runs with the same default
    body = json.dumps({"title": "t", "pad": "x" * limit}).encode()
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    status, error = chunked(live_server_process, "POST", "/api/sessions", chunks)
    assert status == 413
    assert_error(error, 413, "PAYLOAD_TOO_LARGE")


def test_chunked_malformed_json_is_400(live_server_process):
    """A chunked body is parsed like any other: malformed JSON is a 400, not a session with defaults."""
    status, error = chunked(live_server_process, "POST", "/api/sessions", [b'{"language": '])
    assert status == 400
    assert_error(error, 400, "MALFORMED_JSON")


# --- Finding 11: an unknown WebSocket path is refused cleanly ---------------------------------


@pytest.mark.parametrize("path", ["/ws/sessions/{sid}/extra", "/ws/nothing", "/api/sessions"])
async def test_unknown_websocket_path_is_refused_without_a_traceback(live_server_process, path):
    """The handshake is refused (403: daphne's answer to a refusal), never a 500 with a logged traceback."""
    server = live_server_process
    _, session = await asyncio.to_thread(http_call, f"{server.url}/api/sessions", "POST", {})
    logged_before = server.log_path.stat().st_size
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url + path.format(sid=session["sessionId"])):
            pass
    assert refused.value.response.status_code == 403
    logged = server.log_path.read_bytes()[logged_before:].decode(errors="replace")
    assert "Traceback" not in logged and "No route" not in logged, logged


# --- Finding 12: one frame limit, in UTF-8 bytes, answered INVALID_MESSAGE --------------------


def ping_of(size: int, char: str = "x") -> str:
    """A valid ping frame of `size` UTF-8 bytes (give or take one multi-byte character)."""
    head, tail = '{"type": "ping", "data": {"pad": "', '"}}'
    room = size - len((head + tail).encode())
    return head + char * (room // len(char.encode())) + tail


@pytest.fixture
async def live_socket(live_server_process):
    server = live_server_process
    _, session = await asyncio.to_thread(http_call, f"{server.url}/api/sessions", "POST", {})
    async with connect(f"{server.ws_url}/ws/sessions/{session['sessionId']}", max_size=None) as ws:
        assert (await next_message(ws))["type"] == "welcome"
        yield ws


async def test_frame_at_the_limit_is_processed(live_socket, settings):
    """A frame of exactly WS_MAX_MESSAGE_BYTES is read and answered."""
    frame = ping_of(settings.WS_MAX_MESSAGE_BYTES)
    assert len(frame.encode()) == settings.WS_MAX_MESSAGE_BYTES
    await live_socket.send(frame)
    assert (await next_message(live_socket))["type"] == "pong"


@pytest.mark.parametrize("char", ["x", "é", "😀"])
async def test_frame_over_the_limit_is_invalid_and_the_connection_stays(live_socket, settings, char):
    """One byte (or one character's bytes) over WS_MAX_MESSAGE_BYTES: INVALID_MESSAGE, then the socket still works."""
    limit = settings.WS_MAX_MESSAGE_BYTES
    frame = ping_of(limit + len(char.encode()) + 1, char)
    assert len(frame.encode()) > limit
    await live_socket.send(frame)
    error = await next_message(live_socket)
    assert (error["type"], error["data"]["code"]) == ("error", "INVALID_MESSAGE")
    assert str(limit) in error["data"]["message"]
    await live_socket.send(json.dumps({"type": "ping"}))
    assert (await next_message(live_socket))["type"] == "pong"


async def test_multibyte_frame_under_the_limit_in_characters_but_over_in_bytes(live_socket, settings):
    """Counted in bytes: a frame of half the limit in characters but over it in bytes is refused."""
    limit = settings.WS_MAX_MESSAGE_BYTES
    frame = ping_of(limit + 100, "é")
    assert len(frame) < limit < len(frame.encode())
    await live_socket.send(frame)
    assert (await next_message(live_socket))["data"]["code"] == "INVALID_MESSAGE"


async def test_frame_beyond_the_transport_cap_ends_the_connection(live_socket, settings):
    """Past WS_MAX_FRAME_BYTES daphne stops reading and closes the connection with 1009 (message too big)."""
    await live_socket.send("x" * (settings.WS_MAX_FRAME_BYTES + 1))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(live_socket.recv(), 60)
    assert live_socket.close_code == 1009


@pytest.mark.django_db(transaction=True)
async def test_consumer_counts_the_limit_in_utf8_bytes(new_session, settings):
    """In the consumer itself: characters under WS_MAX_MESSAGE_BYTES but bytes over are INVALID_MESSAGE."""
    from interview.asgi import application

    settings.WS_MAX_MESSAGE_BYTES = 1000
    session = await new_session()
    ws = WebsocketCommunicator(application, f"/ws/sessions/{session.id}")
    assert (await ws.connect(timeout=30))[0]
    assert (await ws.receive_json_from(timeout=30))["type"] == "welcome"
    for char in ["é", "😀"]:
        frame = ping_of(1100, char)
        assert len(frame) < 1000 < len(frame.encode())
        await ws.send_to(text_data=frame)
        assert (await ws.receive_json_from(timeout=30))["data"]["code"] == "INVALID_MESSAGE"
    await ws.send_to(text_data=ping_of(1000, "é"))
    assert (await ws.receive_json_from(timeout=30))["type"] == "pong"
    await ws.disconnect(timeout=30)


# --- The test database is what users run --------------------------------------------------


@pytest.mark.django_db
def test_tests_run_on_a_sqlite_file_in_wal_with_the_production_options():
    """A file of this test process in WAL, with the busy timeout and BEGIN IMMEDIATE, never shared-cache memory."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("DATABASE_URL names another database")
    name = connection.settings_dict["NAME"]
    assert "mode=memory" not in str(name) and name != ":memory:"
    assert str(name).endswith(f"interview-test-{os.getpid()}.sqlite3")
    assert os.path.isfile(name)
    options = connection.settings_dict["OPTIONS"]
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] > 0
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


@pytest.mark.django_db(transaction=True)
def test_a_read_is_not_refused_while_another_connection_writes():
    """Readers run beside an open write transaction, as in production (shared-cache memory refused them at once)."""
    import threading

    from django.db import connections, transaction

    from sessions.models import InterviewSession
    from sessions.tests.factories import session_make

    session = session_make()
    outcome = {}

    def read():
        try:
            outcome["count"] = InterviewSession.objects.count()
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc
        finally:
            connections.close_all()

    with transaction.atomic():
        InterviewSession.objects.filter(pk=session.id).update(title="being written")
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(60)
    assert outcome == {"count": 1}
