"""POST /api/execute through Django: validation, each outcome, queueing, session records."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from collaboration.tests.helpers import close_all
from execution import sandbox, services
from interview.testing import PATIENCE_SECONDS
from sessions.models import ChangeType, HistoryEntry

pytestmark = pytest.mark.django_db(transaction=True)

needs_sandbox = pytest.mark.skipif(
    not sandbox.sandbox_status(services.sandbox_config()).usable, reason="the sandbox cannot run here"
)


async def until_running():
    """Wait until a run holds a slot of this event loop's pool (it reached the sandbox)."""
    async with asyncio.timeout(PATIENCE_SECONDS):
        while True:
            current = services._pools.get(asyncio.get_running_loop())
            if current is not None and current.active:
                return
            await asyncio.sleep(0.01)  # the pool has no event to wait on


async def execute(body, client=None):
    client = client or AsyncClient()
    response = await client.post("/api/execute", json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


@needs_sandbox
class TestExecute:
    async def test_python_prints(self):
        """print(1) answers success with stdout and the contract's fields."""
        status, body = await execute({"code": "print(1)", "language": "python"})
        assert status == 200
        assert set(body) >= {"success", "stdout", "stderr", "exitCode", "executionTime", "error", "status", "truncated"}
        assert body["success"] is True
        assert body["stdout"] == "1\n"
        assert (body["exitCode"], body["error"], body["status"], body["truncated"]) == (0, None, "ok", False)
        assert isinstance(body["executionTime"], int)

    async def test_stdin_is_fed(self):
        """stdin reaches the program."""
        _, body = await execute({"code": "print(input()[::-1])", "language": "python", "stdin": "abc\n"})
        assert body["stdout"] == "cba\n"

    async def test_runtime_error_names_the_exception(self):
        """A Python exception answers runtime_error with the exception line."""
        _, body = await execute({"code": "x", "language": "python"})
        assert body["success"] is False
        assert body["status"] == "runtime_error"
        assert body["error"] == "NameError: name 'x' is not defined"

    async def test_timeout_is_enforced(self):
        """A program past its timeout is stopped and says so."""
        _, body = await execute({"code": "while True: pass", "language": "python", "timeout": 1})
        assert body["status"] == "timeout"
        assert body["error"] == "Time limit exceeded (1 s)"
        assert body["executionTime"] < 5000

    async def test_compile_error(self):
        """C++ that does not compile answers compile_error with the compiler's message."""
        _, body = await execute({"code": "int main() { return x; }", "language": "cpp"})
        assert body["status"] == "compile_error"
        assert "x" in body["error"]
        assert "error" in body["stderr"]

    async def test_javascript_and_java_run(self):
        """JavaScript and Java programs run."""
        _, js = await execute({"code": "console.log(6 * 7)", "language": "javascript"})
        assert js["stdout"] == "42\n"
        java = "public class Solution { public static void main(String[] a) { System.out.println(7); } }"
        _, body = await execute({"code": java, "language": "java", "timeout": 10})
        assert body["stdout"] == "7\n", body

    async def test_result_is_recorded_in_the_session_and_sent_to_clients(self, new_session, open_socket):
        """With sessionId, the run becomes an execution history entry and an execution-result message."""
        session = await new_session(language="python")
        ws = await open_socket(session.id)
        _, body = await execute({"code": "print('hi')", "language": "python", "sessionId": str(session.id)})
        assert body["success"] is True
        message = await ws.receive_json_from(timeout=5)
        assert message["type"] == "execution-result"
        assert message["data"]["stdout"] == "hi\n"
        entry = await database_sync_to_async(lambda: HistoryEntry.objects.get(session=session))()
        assert entry.change_type == ChangeType.EXECUTION
        assert entry.code_snapshot == "print('hi')"
        await close_all(ws)

    async def test_a_slow_program_does_not_block_other_requests(self):
        """While a program sleeps, health answers at once."""
        await asyncio.to_thread(services.sandbox_report)  # the first call detects toolchains
        client = AsyncClient()
        slow = asyncio.ensure_future(execute({"code": "import time; time.sleep(3)", "language": "python"}))
        await until_running()
        started = asyncio.get_running_loop().time()
        response = await client.get("/health")
        assert response.status_code == 200
        assert asyncio.get_running_loop().time() - started < 1.0
        assert not slow.done()
        await slow


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"language": "python"}, "code"),
            ({"code": "x"}, "language"),
            ({"code": "x", "language": "ruby"}, "language"),
            ({"code": "x", "language": "python", "timeout": 0}, "timeout"),
            ({"code": "x", "language": "python", "timeout": 11}, "timeout"),
            ({"code": "x", "language": "python", "timeout": "5"}, "timeout"),
            ({"code": "x", "language": "python", "stdin": 3}, "stdin"),
            ({"code": "x", "language": "python", "sessionId": "nope"}, "sessionId"),
        ],
    )
    async def test_bad_requests_are_400(self, body, field):
        """Invalid requests answer 400 VALIDATION_ERROR naming the field."""
        status, error = await execute(body)
        assert status == 400
        assert error["error"] == "VALIDATION_ERROR"
        assert field in error["fields"]

    async def test_unknown_session_is_404(self):
        """A sessionId that does not exist answers 404 before anything runs."""
        status, error = await execute(
            {"code": "print(1)", "language": "python", "sessionId": "00000000-0000-4000-8000-000000000000"}
        )
        assert status == 404
        assert error["error"] == "SESSION_NOT_FOUND"

    async def test_stdin_over_the_limit(self, settings):
        """stdin over MAX_STDIN_BYTES is refused."""
        settings.MAX_STDIN_BYTES = 10
        status, error = await execute({"code": "x", "language": "python", "stdin": "y" * 11})
        assert status == 400
        assert "stdin" in error["fields"]


@needs_sandbox
async def test_a_full_queue_answers_429(settings):
    """Beyond the running and queued runs allowed, the answer is 429 with Retry-After."""
    settings.EXECUTION_MAX_CONCURRENT = 1
    settings.EXECUTION_MAX_QUEUE = 0
    services._pools.clear()
    client = AsyncClient()
    try:
        first = asyncio.ensure_future(execute({"code": "import time; time.sleep(2)", "language": "python"}))
        await until_running()
        response = await client.post(
            "/api/execute", json.dumps({"code": "print(1)", "language": "python"}), content_type="application/json"
        )
        assert response.status_code == 429
        assert response["Retry-After"] == "1"
        assert response.json()["error"] == "RATE_LIMIT_EXCEEDED"
        await first
    finally:
        services._pools.clear()


@needs_sandbox
async def test_a_run_that_waits_too_long_answers_429(settings):
    """A run queued behind a busy slot for longer than EXECUTION_QUEUE_WAIT is answered 429 with Retry-After."""
    settings.EXECUTION_MAX_CONCURRENT = 1
    settings.EXECUTION_MAX_QUEUE = 4
    settings.EXECUTION_QUEUE_WAIT = 0.2
    services._pools.clear()
    try:
        first = asyncio.ensure_future(execute({"code": "import time; time.sleep(3)", "language": "python"}))
        await until_running()
        status, body = await execute({"code": "print(1)", "language": "python"})
        assert status == 429
        assert body["error"] == "RATE_LIMIT_EXCEEDED"
        assert "waiting" in body["message"]
        assert services.pool().queued == 0
        status, body = await first
        assert status == 200 and body["status"] == "ok"
    finally:
        services._pools.clear()


async def test_unusable_sandbox_answers_unavailable(settings):
    """Without bubblewrap, nothing runs unsandboxed: status unavailable with the reason."""
    settings.EXECUTION_SANDBOX = "bwrap"
    original = services.sandbox_config

    def broken():
        config = original()
        return sandbox.SandboxConfig(mode=config.mode, bwrap_path="/nonexistent/bwrap")

    services.sandbox_config = broken
    try:
        status, body = await execute({"code": "print(1)", "language": "python"})
    finally:
        services.sandbox_config = original
    assert status == 200
    assert body["success"] is False
    assert body["status"] == "unavailable"
    assert "bwrap" in body["error"] or "bubblewrap" in body["error"]
