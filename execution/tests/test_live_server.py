"""Hostile programs through the real server: each is contained and /health keeps answering."""

import json
import threading
import time
import urllib.request

import pytest

from execution import sandbox, services
from interview.testing import http_json

pytestmark = pytest.mark.skipif(
    not sandbox.sandbox_status(services.sandbox_config()).usable, reason="the sandbox cannot run here"
)

HOSTILE = {
    "cpu loop": ("python", "while True: pass"),
    "spinning threads": (
        "python",
        "import threading\n"
        "for _ in range(8):\n"
        "    threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\n",
    ),
    "sleep": ("python", "import time; time.sleep(60)"),
    "memory bomb": ("python", "x = []\nwhile True: x.append(bytearray(10**7))"),
    "fork bomb": ("python", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"),
    "output flood": ("python", "import sys\nwhile True: sys.stdout.write('x' * 65536)"),
    "detached child": (
        "python",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')",
    ),
    "kill the parent": ("python", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(0, 9)"),
    "node loop": ("javascript", "while (true) {}"),
    "c++ fork bomb": ("cpp", "#include <unistd.h>\nint main() { while (true) fork(); }"),
}


def post(url, body, timeout=60):
    return http_json(f"{url}/api/execute", "POST", body, timeout=timeout)


def health_time(url) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "healthy"
    return time.perf_counter() - started


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained_and_health_answers(live_server_process, name):
    """The run ends within its limits with an error status, and /health answers in under a second throughout."""
    url = live_server_process.url
    language, code = HOSTILE[name]
    outcome = {}

    def run():
        outcome["result"] = post(url, {"code": code, "language": language, "timeout": 2})

    worker = threading.Thread(target=run)
    started = time.perf_counter()
    worker.start()
    slowest = 0.0
    while worker.is_alive():
        slowest = max(slowest, health_time(url))
        time.sleep(0.1)
    worker.join()
    elapsed = time.perf_counter() - started
    slowest = max(slowest, health_time(url))
    result = outcome["result"]
    assert slowest < 1.0, f"/health took {slowest:.2f} s during {name}"
    assert elapsed < 20
    if name == "detached child":
        assert result["stdout"] == "parent done\n"
    else:
        assert result["success"] is False, result
        assert result["status"] in {"timeout", "memory_limit", "output_limit", "runtime_error"}, result
    # The server is still itself: a normal program runs.
    assert post(url, {"code": "print(6 * 7)", "language": "python"})["stdout"] == "42\n"


def test_health_shows_the_runs_and_the_spares_ready(live_server_process):
    """/health reports this process's runs (none running or waiting when idle) and its spare
    sandboxes, which are back to EXECUTION_SPARES per language after a run."""
    from django.conf import settings

    url = live_server_process.url
    assert post(url, {"code": "print(1)", "language": "python"})["stdout"] == "1\n"
    deadline = time.monotonic() + 60  # a safety net: the spare is rebuilt in the background
    while True:
        runs = http_json(f"{url}/health")["checks"]["sandbox"]["runs"]
        if runs["spares"].get("python") == settings.EXECUTION_SPARES or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # nothing to wait on from outside the server: poll
    assert runs == {**runs, "running": 0, "waiting": 0}
    assert runs["spares"]["python"] == settings.EXECUTION_SPARES
    assert set(runs["spares"]) <= {"python", "javascript", "cpp", "java"}
