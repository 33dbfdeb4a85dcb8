"""Test support: the real server (`manage.py serve`, as `make run` does) on a free port, and
waits for events that are safety nets, never deadlines a busy machine can miss."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from channels.testing import WebsocketCommunicator

BASE_DIR = Path(__file__).resolve().parent.parent

# How long a test waits for something that should happen: only a bound for a hung test.
PATIENCE_SECONDS = 15.0


class PatientCommunicator(WebsocketCommunicator):
    """Channels' communicator whose waits are at least PATIENCE_SECONDS.

    Its defaults (1 s to connect, receive or finish after a disconnect) are deadlines a
    loaded two-core machine misses now and then, and a missed one cancels the consumer.
    """

    async def receive_output(self, timeout=1):  # noqa: ASYNC109 - asgiref's signature
        return await super().receive_output(max(timeout, PATIENCE_SECONDS))

    async def wait(self, timeout=1):  # noqa: ASYNC109 - asgiref's signature
        return await super().wait(max(timeout, PATIENCE_SECONDS))


async def eventually(read, expected, timeout: float = PATIENCE_SECONDS):  # noqa: ASYNC109 - a safety net
    """Await `read()` until it returns `expected` (a write done by a background task), or TimeoutError."""
    async with asyncio.timeout(timeout):
        while True:
            value = await read()
            if value == expected:
                return value
            await asyncio.sleep(0.02)  # the database has no change notification to wait on


# How long a request or a WebSocket read against the real server may take: a bound for a hung test.
SERVER_PATIENCE_SECONDS = 60.0


def http_request(url, method="GET", body=None, headers=None, timeout=SERVER_PATIENCE_SECONDS):
    """Send `body` as JSON; the answer's status, headers and raw body, error statuses included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def http_call(url, method="GET", body=None, headers=None, timeout=SERVER_PATIENCE_SECONDS) -> tuple[int, object]:
    """Send `body` as JSON; the answer's status and JSON body, error statuses included."""
    status, _, raw = http_request(url, method, body, headers, timeout)
    return status, json.loads(raw or b"null")


def http_json(url, method="GET", body=None, timeout=SERVER_PATIENCE_SECONDS):
    """Send `body` as JSON; the JSON answer of a request that must succeed (an error status raises HTTPError)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


async def next_message(ws, *types: str, timeout: float = SERVER_PATIENCE_SECONDS) -> dict:  # noqa: ASYNC109 - a safety net
    """The next message a `websockets` client receives whose type is one of `types` (any, without types)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if not types or message["type"] in types:
                return message


# Every error answer carries these keys (the API contract's error shape).
ERROR_KEYS = {"error", "message", "statusCode", "detail"}


def assert_error(answer, status: int, code: str) -> dict:
    """`answer` is the contract's error `code` with `status`: a test client's response, or the
    JSON body a real server answered (whose status the caller has checked)."""
    if hasattr(answer, "status_code"):
        body = answer.json()
        assert answer.status_code == status, body
    else:
        body = answer
    assert set(body) >= ERROR_KEYS, body
    assert body["error"] == code, body
    assert body["statusCode"] == status
    assert body["detail"] == body["message"]
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """A daphne server process on its own SQLite database in `workdir`."""

    def __init__(self, workdir: Path, env: dict | None = None, command: list[str] | None = None):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.workdir / 'db.sqlite3'}",
            "SECRET_KEY_FILE": str(self.workdir / "secret_key"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
            # One client address drives every test: rate limits would only get in the way.
            "RATE_SESSION_CREATE": "100000/minute",
            "RATE_CODE_SAVE": "100000/minute",
            "RATE_EXECUTION": "100000/minute",
            **(env or {}),
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"
        self.command = command or [sys.executable, "manage.py", "serve"]

    def __enter__(self) -> "RunningServer":
        try:
            return self.start()
        except BaseException:
            self.stop()  # a server that started too slowly is not left behind
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )

    def start(self, timeout: float = 90.0) -> "RunningServer":  # a safety net: a loaded machine starts slowly
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's life
        self.process = subprocess.Popen(
            self.command,
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
