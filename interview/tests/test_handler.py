"""The HTTP edge on the real server: sync views in one hop on long-lived threads, async views
on the event loop, and everything the framework did at the edge still done."""

import http.cookiejar
import json
import os
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from interview.testing import SERVER_PATIENCE_SECONDS, RunningServer, assert_error, http_call

# How long the execute request may take while the sync thread is blocked: far below the
# busy timeout the blocked write waits for, so a run queued behind it would fail this.
EXECUTE_PATIENCE_SECONDS = 20.0


@pytest.fixture(scope="module")
def one_thread_server(tmp_path_factory):
    """The real server with one sync thread, and a busy timeout longer than any test waits."""
    env = {"HTTP_SYNC_THREADS": "1", "SQLITE_BUSY_TIMEOUT": "120"}
    with RunningServer(tmp_path_factory.mktemp("handler"), env=env) as server:
        yield server


def _threads(pid: int) -> set[str]:
    return set(os.listdir(f"/proc/{pid}/task"))


def _database_fds(pid: int, database: Path) -> set[str]:
    """The server's file descriptors open on the database file and its WAL."""
    names = {str(database), f"{database}-wal"}
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in names:
                found.add(fd)
        except OSError:
            continue  # closed while we looked
    return found


class TestOneHopOnLongLivedThreads:
    def test_concurrent_requests_start_no_thread_and_open_no_connection(self, one_thread_server):
        """Under 16 concurrent clients the server's threads and database files are those it had before.

        Django's own handler started a thread, and opened a database connection, per request."""
        server = one_thread_server
        pid = server.process.pid
        database = server.workdir / "db.sqlite3"
        sid = http_call(f"{server.url}/api/sessions", "POST", {})[1]["sessionId"]
        http_call(f"{server.url}/api/sessions/{sid}/code", "POST", {"code": "warm = 1\n"})
        for _ in range(2):  # Django's answer, then the fast lane's
            http_call(f"{server.url}/api/sessions/{sid}/code", "GET")
        threads_before, fds_before = _threads(pid), _database_fds(pid, database)
        assert fds_before, "the warm-up opened the pool thread's connection"
        seen_threads, seen_fds = set(), set()
        done = threading.Event()

        def client(i):
            for n in range(15):
                path, body = [
                    (f"/api/sessions/{sid}/code", None),
                    (f"/api/sessions/{sid}/code", {"code": f"x = {i}.{n}\n"}),
                    (f"/api/sessions/{sid}", None),
                    (f"/api/sessions/{sid}/history", None),
                ][n % 4]
                status, _ = http_call(f"{server.url}{path}", "POST" if body else "GET", body)
                assert status == 200

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client, i) for i in range(16)]

            def watch():
                while not done.is_set():  # sampling /proc as fast as it can, for the load's length
                    seen_threads.update(_threads(pid))
                    seen_fds.update(_database_fds(pid, database))

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                for future in futures:
                    future.result(timeout=SERVER_PATIENCE_SECONDS)
            finally:
                done.set()
                watcher.join()
        assert seen_threads == threads_before
        assert seen_fds == fds_before

    def test_execute_answers_while_the_sync_thread_is_blocked(self, one_thread_server):
        """With the one sync thread waiting for the database's write lock, POST /api/execute still answers."""
        server = one_thread_server
        pid = server.process.pid
        blocker = sqlite3.connect(server.workdir / "db.sqlite3", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the server's next write waits
        pool = ThreadPoolExecutor(1)
        try:
            write = pool.submit(http_call, f"{server.url}/api/sessions", "POST", {})
            _wait_for_a_busy_wait(pid, lambda: write.done())
            status, result = http_call(
                f"{server.url}/api/execute",
                "POST",
                {"code": "print(6 * 7)", "language": "python"},
                timeout=EXECUTE_PATIENCE_SECONDS,
            )
            assert status == 200, result
            assert set(result) >= {"success", "stdout", "stderr", "exitCode", "executionTime", "error"}
            assert not write.done()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
            pool.shutdown(wait=True)
        assert write.result()[0] == 201


# SQLite's busy handler sleeps between tries; an idle thread of the server waits in futex or
# epoll instead, so a thread in nanosleep is the one waiting for the write lock.
_SLEEP_SYSCALLS = {"x86_64": {"35", "230"}, "aarch64": {"101", "115"}}


def _wait_for_a_busy_wait(pid: int, gave_up, timeout: float = SERVER_PATIENCE_SECONDS) -> None:
    """Return once a thread of `pid` sleeps in SQLite's busy handler (read from /proc/<pid>/task/*/syscall)."""
    sleeps = _SLEEP_SYSCALLS.get(os.uname().machine)
    if sleeps is None or not os.access(f"/proc/{pid}/task/{pid}/syscall", os.R_OK):
        pytest.skip("needs a readable /proc/<pid>/task/*/syscall on x86_64 or aarch64")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not gave_up():
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/syscall") as fh:
                    if fh.read().split(" ", 1)[0] in sleeps:
                        return
            except OSError:
                continue
    raise AssertionError("no thread of the server waited for the write lock")


class TestTheEdgeStillDoesItsJob:
    def test_errors_keep_the_contract_shape(self, one_thread_server):
        """404, 400 (bad JSON, validation), 405 and an unknown route answer the error shape."""
        url = one_thread_server.url
        sid = http_call(f"{url}/api/sessions", "POST", {})[1]["sessionId"]
        status, body = http_call(f"{url}/api/sessions/00000000-0000-4000-8000-000000000000")
        assert status == 404
        assert_error(body, 404, "SESSION_NOT_FOUND")
        status, body = http_call(f"{url}/api/sessions/{sid}/code", "POST", {"code": 7})
        assert_error(body, 400, "VALIDATION_ERROR")
        assert "code" in body["fields"]
        request = urllib.request.Request(
            f"{url}/api/sessions/{sid}/code", data=b"{nope", method="POST", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=SERVER_PATIENCE_SECONDS)
        assert_error(json.loads(info.value.read()), 400, "MALFORMED_JSON")
        status, body = http_call(f"{url}/api/sessions", "PUT", {})
        assert_error(body, 405, "METHOD_NOT_ALLOWED")
        status, body = http_call(f"{url}/api/nothing-here")
        assert_error(body, 404, "NOT_FOUND")

    def test_staff_login_through_the_admin_may_delete_with_csrf(self, one_thread_server):
        """A staff user logged in at /admin/ deletes a session with the CSRF token, and without it is refused."""
        server = one_thread_server
        server.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; "
            "get_user_model().objects.create_superuser('boss', 'b@example.com', 'pw-987654321')",
        )
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{server.url}/admin/login/", timeout=SERVER_PATIENCE_SECONDS).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {"username": "boss", "password": "pw-987654321", "csrfmiddlewaretoken": token, "next": "/admin/"}
        ).encode()
        opener.open(urllib.request.Request(f"{server.url}/admin/login/", data=form), timeout=SERVER_PATIENCE_SECONDS)
        cookies = {cookie.name: cookie.value for cookie in jar}
        assert "sessionid" in cookies
        sid = http_call(f"{server.url}/api/sessions", "POST", {})[1]["sessionId"]

        def delete(headers):
            request = urllib.request.Request(f"{server.url}/api/sessions/{sid}", method="DELETE", headers=headers)
            try:
                with opener.open(request, timeout=SERVER_PATIENCE_SECONDS) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        status, raw = delete({})
        assert status == 403, raw
        assert "CSRF" in json.loads(raw)["message"]
        status, _ = delete({"X-CSRFToken": cookies["csrftoken"]})
        assert status == 204
        assert http_call(f"{server.url}/api/sessions/{sid}")[0] == 404


class TestSlidingWindowThrottle:
    def _throttle(self, settings, rate, clock):
        from django.core.cache import cache

        from interview.throttling import ScopedAddressThrottle

        cache.clear()
        settings.RATE_LIMITS = {"session_create": rate}
        throttle = ScopedAddressThrottle("session_create")
        throttle.timer = lambda: clock[0]
        return throttle

    def test_limit_slides_with_time_and_says_when_to_retry(self, rf, settings):
        """3/minute: a fourth request in the window waits; the previous window's count slides out."""
        clock = [6000.0]  # the start of a minute window
        throttle = self._throttle(settings, "3/minute", clock)
        request = rf.post("/api/sessions", REMOTE_ADDR="10.1.1.1")
        assert [throttle.allow_request(request, None) for _ in range(4)] == [True, True, True, False]
        assert 60 <= throttle.wait() <= 100  # this window's end, then a third of the next
        clock[0] += 60  # the next window: the three count fully at its start
        assert throttle.allow_request(request, None) is False
        clock[0] += 15  # a quarter of the window slid by: 2.25 of them count, room for one
        assert throttle.allow_request(request, None) is True
        assert throttle.allow_request(request, None) is False
        assert 0 < throttle.wait() <= 60

    def test_addresses_have_their_own_counts(self, rf, settings):
        """One address at its limit does not limit another."""
        throttle = self._throttle(settings, "1/minute", [6000.0])
        assert throttle.allow_request(rf.post("/", REMOTE_ADDR="10.1.1.1"), None) is True
        assert throttle.allow_request(rf.post("/", REMOTE_ADDR="10.1.1.1"), None) is False
        assert throttle.allow_request(rf.post("/", REMOTE_ADDR="10.1.1.2"), None) is True
