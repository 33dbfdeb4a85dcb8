"""run_code in a real sandbox: every language, every limit, and a battery of hostile programs (no Django)."""

import asyncio
import os
import shutil
import socket
import stat
import tempfile
import textwrap
import time
import uuid

import pytest

from execution.sandbox import (
    LANGUAGES,
    ExecutionPool,
    ExecutionResult,
    Limits,
    QueueFull,
    SandboxConfig,
    run_code,
    sandbox_status,
    toolchains,
)

# One work root for the module, traversable by the per-run uids, checked empty after each test.
WORK_ROOT = tempfile.mkdtemp(prefix="runner-tests-")
os.chmod(WORK_ROOT, 0o711)
CONFIG = SandboxConfig(work_root=WORK_ROOT)
STATUS = sandbox_status(CONFIG)
TOOLCHAINS = toolchains(CONFIG)
IS_ROOT = os.geteuid() == 0
SLOW = Limits(timeout_s=1.0)

pytestmark = pytest.mark.skipif(not STATUS.usable, reason=f"no usable sandbox here: {STATUS.reason}")


def needs(language):
    tc = TOOLCHAINS[language]
    return pytest.mark.skipif(not tc.available, reason=f"{language} toolchain missing: {tc.reason}")


async def run(language, code, stdin="", limits=None, config=CONFIG) -> ExecutionResult:
    return await run_code(
        language=language, code=textwrap.dedent(code), stdin=stdin, limits=limits or Limits(), config=config
    )


def sleeping_run(pool: ExecutionPool):
    """A run of 0.3 s on `pool`."""
    return pool.run(language="python", code="import time; time.sleep(0.3)", limits=Limits(), config=CONFIG)


async def start_sleeping_run(pool: ExecutionPool) -> asyncio.Task:
    """A sleeping run started on `pool`, given time to take a slot or its place in the queue."""
    task = asyncio.create_task(sleeping_run(pool))
    await asyncio.sleep(0.05)
    return task


def processes_of_run_uids() -> list[tuple[int, int]]:
    """(pid, uid) of live processes of the per-run uid range started by this test process.

    Other processes on the machine (another test session, a server) may use the same range.
    """
    parents, uids = {}, {}
    low, high = CONFIG.uid_base, CONFIG.uid_base + CONFIG.uid_count
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                uids[int(entry)] = os.stat(f"/proc/{entry}").st_uid
            except (OSError, IndexError, ValueError):
                continue
    me, found = os.getpid(), []
    for pid, uid in uids.items():
        if low <= uid < high:
            ancestor, hops = parents.get(pid), 0
            while ancestor not in (None, 0, 1, me) and hops < 64:
                ancestor, hops = parents.get(ancestor), hops + 1
            if ancestor == me:
                found.append((pid, uid))
    return found


def sleep_token() -> str:
    """A unique, valid `sleep` argument (about 1000 s) to find a sleeper by its argv."""
    return f"1000.{uuid.uuid4().int % 10**12:012d}"


def exists(path: str) -> bool:
    return os.path.lexists(path)


def uids_of(pid: int) -> tuple[int, ...] | None:
    """(real, effective, saved, fs) uids of a process, read from the host."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(ln for ln in f if ln.startswith("Uid:"))
    except (OSError, StopIteration):
        return None
    return tuple(int(x) for x in line.split()[1:5])


def processes_with(token: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


async def host_uids_of(token: str, wait_s: float = 3.0) -> list[tuple[int, ...]]:
    """The (real, effective, saved, fs) uids, read from the host, of processes whose argv has token."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        found = []
        for pid in processes_with(token):
            uids = uids_of(pid)
            if uids:
                found.append(uids)
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


PREEXISTING = set(processes_of_run_uids())  # e.g. left by an earlier, killed test session


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After every test: no process of a run uid is alive and no run directory remains."""
    yield
    if IS_ROOT:
        assert set(processes_of_run_uids()) <= PREEXISTING
    assert [name for name in os.listdir(WORK_ROOT) if not name.startswith("exec-cache-")] == []


def teardown_module():
    shutil.rmtree(WORK_ROOT, ignore_errors=True)


HELLO = {
    "python": "print(input())",
    "javascript": "const s = require('fs').readFileSync(0, 'utf8'); console.log(s.split('\\n')[0]);",
    "cpp": """
        #include <iostream>
        #include <string>
        int main() { std::string s; std::getline(std::cin, s); std::cout << s << std::endl; }
    """,
    "java": """
        import java.util.Scanner;
        public class Main {
            public static void main(String[] a) { System.out.println(new Scanner(System.in).nextLine()); }
        }
    """,
}
SPIN = {
    "python": "while True: pass",
    "javascript": "for (;;) {}",
    "cpp": "int main(){ volatile unsigned long x = 0; for(;;) x++; }",
    "java": "public class Main { public static void main(String[] a) { long x = 0; while (true) x++; } }",
}
MEMORY_BOMB = {
    "python": "x = []\nwhile True: x.append(bytearray(1 << 20))",
    "javascript": "const a = []; for (;;) a.push(new Array(100000).fill(1.5));",
    "cpp": """
        #include <vector>
        int main() { std::vector<char*> v; for (;;) { char* p = new char[1 << 20]; p[0] = 1; v.push_back(p); } }
    """,
    "java": """
        import java.util.*;
        public class Main {
            public static void main(String[] a) {
                List<long[]> l = new ArrayList<>();
                while (true) l.add(new long[1 << 17]);
            }
        }
    """,
}


class TestProbe:
    def test_sandbox_is_isolated_and_unprivileged_here(self):
        """bwrap works here; as root each run gets its own uid."""
        assert STATUS.isolated, STATUS.reason
        assert STATUS.mode == "bwrap"
        assert STATUS.reason is None
        assert STATUS.per_run_uid == IS_ROOT
        assert STATUS.as_dict()["isolated"] is True

    def test_shared_files_are_root_owned_and_read_only(self):
        """The only file kept between runs (javac's class-data archive) is root's and read-only."""
        kept = [os.path.join(root, f) for root, _, files in os.walk(WORK_ROOT) for f in files]
        for path in kept:
            st = os.lstat(path)
            assert stat.S_ISREG(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o444
            assert st.st_uid == os.geteuid()
            assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o755

    def test_every_toolchain_reports_a_version(self):
        """Each language is detected with a version string, run inside the sandbox."""
        assert set(TOOLCHAINS) == set(LANGUAGES)
        for tc in TOOLCHAINS.values():
            if tc.available:
                assert tc.version
                assert tc.reason is None

    async def test_missing_toolchain_answers_unavailable(self):
        """A language whose toolchain is missing is unavailable with a clear message."""
        config = SandboxConfig(node_path="/nonexistent/node", work_root=WORK_ROOT)
        assert not toolchains(config)["javascript"].available
        assert "not found" in toolchains(config)["javascript"].reason
        result = await run("javascript", "console.log(1)", config=config)
        assert result.status == "unavailable"
        assert result.error.startswith("JavaScript is not available")


class TestLanguages:
    @pytest.mark.parametrize("language", LANGUAGES)
    async def test_hello_echoes_stdin(self, language):
        """Every language runs and reads its stdin."""
        if not TOOLCHAINS[language].available:
            pytest.skip(TOOLCHAINS[language].reason)
        result = await run(language, HELLO[language], stdin="héllo wörld\nsecond line\n")
        assert result.status == "ok", result
        assert result.success
        assert result.stdout == "héllo wörld\n"
        assert result.exit_code == 0
        assert result.error is None
        assert result.truncated is False
        assert result.execution_time_ms > 0
        assert result.as_dict()["exitCode"] == 0

    @pytest.mark.parametrize("language", LANGUAGES)
    async def test_infinite_loop_times_out(self, language):
        """A spinning program is stopped at the wall-time limit of every language."""
        if not TOOLCHAINS[language].available:
            pytest.skip(TOOLCHAINS[language].reason)
        started = time.monotonic()
        result = await run(language, SPIN[language], limits=SLOW)
        assert result.status == "timeout", result
        assert result.error == "Time limit exceeded (1 s)"
        assert not result.success
        assert result.exit_code is None
        assert time.monotonic() - started < 1.0 + 6.0  # compile time included for cpp/java

    @pytest.mark.parametrize("language", LANGUAGES)
    async def test_memory_bomb_is_a_memory_limit(self, language):
        """Allocating without end ends as memory_limit in every language."""
        if not TOOLCHAINS[language].available:
            pytest.skip(TOOLCHAINS[language].reason)
        result = await run(language, MEMORY_BOMB[language], limits=Limits(memory_mb=96, timeout_s=10))
        assert result.status == "memory_limit", result
        assert result.error == "Memory limit exceeded"
        assert not result.success

    async def test_python_exception_line_is_the_error(self):
        """A Python traceback's last line is the error; output before it is kept."""
        result = await run("python", "print('before')\nprint(x)")
        assert result.status == "runtime_error"
        assert result.error == "NameError: name 'x' is not defined"
        assert result.stdout == "before\n"
        assert "Traceback" in result.stderr
        assert result.exit_code == 1

    async def test_python_syntax_error(self):
        """A syntax error is reported by its message."""
        result = await run("python", "print(")
        assert result.status == "runtime_error"
        assert result.error.startswith("SyntaxError:")

    async def test_python_exit_code_and_builtins(self):
        """sys.exit codes come through; exit() from site works; stdlib imports work."""
        result = await run("python", "import json, collections, re, heapq\nprint(json.dumps([1]))\nexit(3)")
        assert result.stdout == "[1]\n"
        assert result.exit_code == 3
        assert result.status == "runtime_error"
        assert result.error == "Process exited with code 3"

    @needs("javascript")
    async def test_javascript_error_line(self):
        """Node's uncaught error line is the error."""
        result = await run("javascript", "console.log('a');\nfoo();")
        assert result.status == "runtime_error"
        assert result.error == "ReferenceError: foo is not defined"
        assert result.stdout == "a\n"
        result = await run("javascript", "throw new Error('boom')")
        assert result.error == "Error: boom"

    @needs("cpp")
    async def test_cpp_compile_error(self):
        """A C++ compile error: compiler message in stderr, first error line in error."""
        result = await run("cpp", "int main() { return y; }")
        assert result.status == "compile_error"
        assert not result.success
        assert result.exit_code is None
        assert "error:" in result.stderr
        assert "error:" in result.error
        assert "y\u2019 was not declared" in result.error or "y' was not declared" in result.error

    @needs("cpp")
    async def test_cpp_runtime_errors(self):
        """Exit codes, signals and uncaught exceptions of a C++ program."""
        exit3, segv, throw = await asyncio.gather(
            run("cpp", "int main(){ return 3; }"),
            run("cpp", "int main(){ volatile int* p = nullptr; *p = 1; }"),
            run("cpp", '#include <stdexcept>\nint main(){ throw std::runtime_error("boom"); }'),
        )
        assert (exit3.status, exit3.exit_code, exit3.error) == ("runtime_error", 3, "Process exited with code 3")
        assert segv.status == "runtime_error"
        assert segv.exit_code == 128 + 11
        assert segv.error == "Killed by signal SIGSEGV"
        assert throw.status == "runtime_error"
        assert "std::runtime_error" in throw.error
        assert "boom" in throw.error

    @needs("java")
    async def test_java_compile_error(self):
        """A javac error: message in stderr, first error line in error."""
        result = await run("java", "public class Main { public static void main(String[] a) { int x = y; } }")
        assert result.status == "compile_error"
        assert result.error.startswith("Main.java:1: error: cannot find symbol")
        assert "symbol" in result.stderr

    @needs("java")
    async def test_java_any_public_class_name_and_exception(self):
        """A public class of any name runs; an uncaught exception's line is the error."""
        ok, boom = await asyncio.gather(
            run(
                "java",
                """
                import java.util.*;
                class Helper { static int twice(int x) { return 2 * x; } }
                public class Solution {
                    public static void main(String[] args) { System.out.println(Helper.twice(21)); }
                }
                """,
            ),
            run(
                "java",
                """
                public class Boom {
                    public static void main(String[] a) { throw new IllegalStateException("bad"); }
                }
                """,
            ),
        )
        assert ok.status == "ok", ok
        assert ok.stdout == "42\n"
        assert boom.status == "runtime_error"
        assert boom.error == "java.lang.IllegalStateException: bad"

    @needs("java")
    async def test_java_package_and_non_public_main(self):
        """A package declaration and a non-public class with main both work."""
        result = await run(
            "java",
            """
            package interview.demo;
            class Program { public static void main(String[] a) { System.out.println("pkg"); } }
            """,
        )
        assert result.status == "ok", result
        assert result.stdout == "pkg\n"


@pytest.mark.skipif(not STATUS.cgroups, reason="no cgroups here: the main tests already run without them")
class TestWithoutCgroups:
    @pytest.mark.parametrize("language", LANGUAGES)
    async def test_runs_and_limits_memory_on_rlimits_alone(self, language):
        """With cgroups off, every language still runs and its memory bomb is still a memory limit."""
        if not TOOLCHAINS[language].available:
            pytest.skip(TOOLCHAINS[language].reason)
        config = SandboxConfig(work_root=WORK_ROOT, cgroups=False)
        assert sandbox_status(config).cgroups == ()
        hello, bomb = await asyncio.gather(
            run(language, HELLO[language], stdin="hi\n", config=config),
            run(language, MEMORY_BOMB[language], limits=Limits(memory_mb=96, timeout_s=10), config=config),
        )
        assert (hello.status, hello.stdout) == ("ok", "hi\n"), hello
        assert bomb.status == "memory_limit", bomb


class TestLimits:
    async def test_sleep_past_the_timeout_is_stopped(self):
        """A sleeping program is stopped at the wall-time limit, with the configured seconds."""
        started = time.monotonic()
        result = await run("python", "import time\nprint('start', flush=True)\ntime.sleep(60)", limits=SLOW)
        assert result.status == "timeout"
        assert result.error == "Time limit exceeded (1 s)"
        assert result.stdout == "start\n"
        assert time.monotonic() - started < 3

    async def test_timeout_message_uses_configured_seconds(self):
        """The message carries the configured limit, e.g. 1.5 s."""
        result = await run("python", "while True: pass", limits=Limits(timeout_s=1.5))
        assert result.error == "Time limit exceeded (1.5 s)"

    async def test_spinning_threads_are_stopped(self):
        """Busy loops in several threads hit the time (or CPU) limit."""
        code = """
        import threading
        def spin():
            while True: pass
        for _ in range(4):
            threading.Thread(target=spin).start()
        spin()
        """
        started = time.monotonic()
        result = await run("python", code, limits=SLOW)
        assert result.status == "timeout"
        assert time.monotonic() - started < 3

    async def test_output_flood_is_cut_at_the_cap(self):
        """100 MB of output is stopped quickly and truncated to the cap."""
        code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100): sys.stdout.write(chunk)"
        started = time.monotonic()
        result = await run("python", code, limits=Limits(output_bytes=1_000_000))
        assert result.status == "output_limit"
        assert result.truncated
        assert result.error == "Output limit exceeded (1000000 bytes)"
        assert len(result.stdout) + len(result.stderr) == 1_000_000
        assert time.monotonic() - started < 3

    async def test_output_cap_counts_stdout_and_stderr_together(self):
        """The cap is shared by stdout and stderr."""
        code = """
        import sys, time
        sys.stderr.write("e" * 30000)
        time.sleep(0.3)
        sys.stdout.write("o" * 30000)
        time.sleep(5)
        """
        result = await run("python", code, limits=Limits(output_bytes=50_000))
        assert result.status == "output_limit"
        assert (len(result.stderr), len(result.stdout)) == (30_000, 20_000)

    async def test_output_exactly_at_the_cap_is_fine(self):
        """Output up to the cap is not an error."""
        result = await run("python", "print('x' * 999)", limits=Limits(output_bytes=1000))
        assert result.status == "ok"
        assert not result.truncated

    async def test_file_size_limit(self):
        """Writing a file past file_size_mb fails."""
        code = "open('big', 'wb').write(b'x' * (3 << 20))"
        result = await run("python", code, limits=Limits(file_size_mb=1))
        assert result.status == "runtime_error"
        assert "File too large" in result.error

    async def test_open_files_limit(self):
        """Opening more files than open_files fails."""
        code = "fs = [open('/dev/null') for _ in range(100)]"
        result = await run("python", code, limits=Limits(open_files=32))
        assert result.status == "runtime_error"
        assert "Too many open files" in result.error

    async def test_process_limit_stops_threads(self):
        """Threads past max_processes cannot be started."""
        code = """
        import threading, time
        for i in range(100):
            threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        """
        result = await run("python", code, limits=Limits(max_processes=16))
        assert result.status == "runtime_error"
        assert "can't start new thread" in result.error

    async def test_python_memory_limit_is_the_configured_one(self):
        """memory_mb bounds a Python program: 40 MB fits in 128 MB, 200 MB does not."""
        fits, too_big = await asyncio.gather(
            run("python", "x = bytearray(40 << 20)\nprint(len(x))", limits=Limits(memory_mb=128)),
            run("python", "x = bytearray(200 << 20)\nprint(len(x))", limits=Limits(memory_mb=128)),
        )
        assert fits.status == "ok"
        assert too_big.status == "memory_limit"

    @needs("cpp")
    async def test_compile_stage_has_its_own_limits(self):
        """A compiler past compile_timeout_s or compile_memory_mb is a compile_error saying so."""
        code = (
            "#include <bits/stdc++.h>\nint main() { std::map<int, std::vector<std::string>> m; return (int)m.size(); }"
        )
        slow, hungry = await asyncio.gather(
            run("cpp", code, limits=Limits(compile_timeout_s=0.2)),
            run("cpp", code, limits=Limits(compile_memory_mb=64)),
        )
        assert slow.status == "compile_error"
        assert slow.error == "Compilation time limit exceeded (0.2 s)"
        assert hungry.status == "compile_error"
        assert hungry.error == "Compilation memory limit exceeded", hungry

    async def test_large_stdin_round_trip_and_unread_stdin(self):
        """1 MB of stdin is fed whole; a program ignoring its stdin is not disturbed."""
        data = "y" * 1_000_000
        echoed, ignored = await asyncio.gather(
            run("python", "import sys\nprint(len(sys.stdin.read()))", stdin=data),
            run("python", "print('ignored')", stdin=data * 3),
        )
        assert echoed.stdout == "1000000\n"
        assert ignored.status == "ok"
        assert ignored.stdout == "ignored\n"

    async def test_tmp_is_private_and_size_limited(self):
        """/tmp is writable, bounded by tmpfs_mb, and not the host's."""
        code = """
        import os
        with open('/tmp/f', 'wb') as f:
            try:
                f.write(b'x' * (8 << 20))
            except OSError as e:
                print('full', e.errno)
        """
        result = await run("python", code, limits=Limits(tmpfs_mb=4))
        assert "full 28" in result.stdout  # ENOSPC


class TestHostile:
    async def test_fork_bomb_stops_at_the_process_limit(self):
        """An os.fork loop never has more than max_processes alive, and none outlives the run."""
        code = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """
        started = time.monotonic()
        task = asyncio.create_task(run("python", code, limits=Limits(timeout_s=1, max_processes=32)))
        peak = 0
        while not task.done():
            peak = max(peak, len(set(processes_of_run_uids()) - PREEXISTING))
            await asyncio.sleep(0.02)
        result = await task
        assert result.status == "timeout"
        assert time.monotonic() - started < 8
        if IS_ROOT:
            assert 10 < peak <= 32 + 2  # the program's processes plus bwrap's two

    async def test_subprocess_bomb(self):
        """Spawning sleepers without end ends at the limit, and every sleeper is gone afterwards."""
        token = sleep_token()
        code = f"""
        import subprocess, time
        refused = 0
        while True:
            try:
                subprocess.Popen(["/bin/sleep", "{token}"])
            except OSError:
                refused += 1
                if refused == 1:
                    print("refused", flush=True)
                time.sleep(0.01)
        """
        task = asyncio.create_task(run("python", code, limits=Limits(timeout_s=2, max_processes=24)))
        await asyncio.sleep(1)
        seen = await host_uids_of(token)
        result = await task
        assert result.status == "timeout", result
        assert result.stdout == "refused\n"
        assert 10 < len(seen) <= 24
        assert processes_with(token) == []

    async def test_detached_child_does_not_outlive_the_answer(self):
        """A setsid + double-fork daemon is killed with the sandbox, on exit and on timeout."""
        tokens = [sleep_token(), sleep_token()]
        code = """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in (0, 1, 2):
                    os.close(fd)
                os.execv("/bin/sleep", ["sleep", "{token}"])
            os._exit(0)
        time.sleep(0.3)
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        alive = [p for p in pids if b"{token}" in open(f"/proc/{{p}}/cmdline", "rb").read()]
        print("daemon running", len(alive), flush=True)
        {tail}
        """
        exits, hangs = await asyncio.gather(
            run("python", code.format(token=tokens[0], tail="")),
            run("python", code.format(token=tokens[1], tail="time.sleep(60)"), limits=SLOW),
        )
        assert exits.status == "ok", exits
        assert exits.stdout == "daemon running 1\n"
        assert hangs.status == "timeout"
        assert hangs.stdout == "daemon running 1\n"
        assert processes_with(tokens[0]) == []
        assert processes_with(tokens[1]) == []

    async def test_secret_files_are_not_visible(self):
        """/etc/shadow, /root, /home, the project and its secret key cannot be read."""
        code = """
        import os
        for path in ["/etc/shadow", "/etc/passwd", "/work/main/manage.py", "/work/main/.secret_key",
                     "/work/main/db.sqlite3", "/root/.bash_history", "/home", "/work", "/var", "/sys/kernel"]:
            try:
                if os.path.isdir(path):
                    print("LISTED", path, os.listdir(path))
                else:
                    print("READ", path, len(open(path, "rb").read()))
            except OSError as e:
                print("DENIED", path, type(e).__name__)
        print("ROOT", sorted(os.listdir("/")))
        print("SLASHROOT", os.listdir("/root") if os.path.isdir("/root") else None)
        """
        result = await run("python", code)
        assert result.status == "ok", result
        assert "READ" not in result.stdout
        assert "LISTED" not in result.stdout
        assert result.stdout.count("DENIED") == 10
        root = result.stdout.split("ROOT ", 1)[1].splitlines()[0]
        for name in ("work", "home", "var", "sys", "srv", "opt", "mnt", "etc/shadow"):
            assert f"'{name}'" not in root
        slash_root = result.stdout.split("SLASHROOT ", 1)[1].strip()
        assert slash_root in ("None", "['.pyenv']")

    async def test_server_environment_is_not_visible(self, monkeypatch):
        """A secret in the server's environment is in neither os.environ nor any /proc environ."""
        secret = "s3cr3t-" + uuid.uuid4().hex
        monkeypatch.setenv("INTERVIEW_TEST_SECRET", secret)
        code = """
        import os
        print(dict(os.environ))
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    print(pid, open(f"/proc/{pid}/environ", "rb").read())
                except OSError as e:
                    print(pid, e)
        """
        result = await run("python", code)
        assert result.status == "ok", result
        assert secret not in result.stdout
        assert "INTERVIEW_TEST_SECRET" not in result.stdout
        assert "DJANGO" not in result.stdout
        assert "HOME': '/tmp'" in result.stdout

    async def test_writes_outside_the_work_dir_do_not_persist(self):
        """Writes to system dirs fail; writes to the sandbox's tmpfs vanish; nothing reaches the host."""
        name = "sandbox-marker-" + uuid.uuid4().hex
        targets = ["/tmp", "/dev/shm", "/var/tmp", "/run/lock", "/usr", "/etc", "/", "/root", "/dev"]
        code = f"""
        import os
        for d in {targets!r}:
            try:
                with open(os.path.join(d, "{name}"), "w") as f:
                    f.write("x")
                print("WROTE", d)
            except OSError as e:
                print("FAILED", d, type(e).__name__)
        """
        result = await run("python", code)
        assert result.status == "ok", result
        wrote = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("WROTE")}
        assert wrote <= {"/tmp", "/dev/shm"}
        assert [d for d in targets if exists(os.path.join(d, name))] == []

    async def test_no_network_to_a_host_listener(self):
        """A TCP connection to a listener the test opens on 127.0.0.1 fails."""
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("CONNECTED")
        except OSError as e:
            print("REFUSED", type(e).__name__)
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
            print("INTERNET")
        except OSError as e:
            print("NO INTERNET", type(e).__name__)
        """
        try:
            result = await run("python", code)
            assert result.status == "ok", result
            assert "REFUSED" in result.stdout
            assert "NO INTERNET" in result.stdout
            with pytest.raises(BlockingIOError):
                server.accept()
        finally:
            server.close()

    async def test_signals_cannot_reach_the_server(self):
        """kill(ppid), kill(-1) and killpg only hit the sandbox."""
        codes = [
            "import os\nos.kill(os.getppid(), 9)\nprint('alive')",
            "import os\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\nprint('alive')",
            "import os\ntry:\n    os.killpg(os.getpgid(0), 9)\nexcept OSError:\n    pass\nprint('alive')",
        ]
        results = await asyncio.gather(*(run("python", c) for c in codes))
        assert results[0].stdout == "alive\n"
        assert results[1].stdout == "alive\n"
        assert results[2].stdout in ("", "alive\n")
        assert os.getpid() > 0  # still here

    async def test_runs_as_an_unprivileged_uid_outside(self):
        """Seen from the host, every process of the program runs as a non-root (per-run) uid."""
        token = sleep_token()
        code = f"import subprocess\nsubprocess.run(['/bin/sleep', '{token}'], timeout=1.5)"
        task = asyncio.create_task(run("python", code))
        uids = await host_uids_of(token)
        result = await task
        assert result.status == "runtime_error", result
        assert result.error.startswith("subprocess.TimeoutExpired")
        assert uids, "the sandboxed process was not seen from the host"
        for real, effective, saved, fs in uids:
            assert 0 not in (real, effective, saved, fs)
            if IS_ROOT:
                assert CONFIG.uid_base <= real < CONFIG.uid_base + CONFIG.uid_count

    async def test_ctypes_is_contained(self):
        """ctypes can crash only itself and cannot regain privileges or namespaces."""
        crash = "import ctypes\nctypes.string_at(0)"
        probe = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print("setuid", libc.setuid(0))
        print("unshare_user", libc.unshare(0x10000000))
        print("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
        print("ptrace", libc.ptrace(16, {host_pid}, 0, 0))
        print("uid", os.getuid())
        for pid in ("1", "self"):
            status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
            print("caps", pid, status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip())
        """
        probe = probe.replace("{host_pid}", str(os.getpid()))
        crashed, probed = await asyncio.gather(run("python", crash), run("python", probe))
        assert crashed.status == "runtime_error"
        assert crashed.error == "Killed by signal SIGSEGV"
        assert probed.status == "ok", probed
        assert "setuid -1" in probed.stdout
        assert "unshare_user -1" in probed.stdout
        assert "mount -1" in probed.stdout
        assert "ptrace -1" in probed.stdout
        assert "caps 1 0000000000000000 0000000000000000 1" in probed.stdout  # bwrap's init: nothing to steal
        assert "caps self 0000000000000000 0000000000000000 1" in probed.stdout

    async def test_planted_symlinks_do_not_touch_host_files(self, tmp_path):
        """Links planted in the work dir never lead cleanup to delete, chown or modify host files."""
        victim_dir = tmp_path / "victim"
        victim_dir.mkdir()
        victim = victim_dir / "precious.txt"
        victim.write_text("keep me")
        before = victim.stat()
        code = f"""
        import os
        os.symlink("{victim}", "link_to_file")
        os.symlink("{victim_dir}", "link_to_dir")
        os.mkdir("sub")
        os.symlink("{victim_dir}", "sub/deeper")
        os.symlink("/etc/passwd", "main.py.orig")
        os.mkdir("locked")
        os.chmod("locked", 0)
        print("planted")
        """
        result = await run("python", code)
        assert result.stdout == "planted\n", result
        after = victim.stat()
        assert victim.read_text() == "keep me"
        assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
            before.st_uid,
            before.st_gid,
            stat.S_IMODE(before.st_mode),
        )
        assert os.listdir(victim_dir) == ["precious.txt"]

    async def test_work_dir_is_fresh_and_private_per_run(self):
        """Each run starts with only its source; files of a previous run are gone."""
        code = "import os\nprint(sorted(os.listdir('.')), os.getcwd())\nopen('leftover', 'w').write('x')"
        first, second = await run("python", code), await run("python", code)
        assert first.stdout == second.stdout == "['main.py'] /box\n"


class TestLifecycle:
    async def test_cancelled_run_leaves_nothing(self):
        """Cancelling run_code kills the sandbox and removes its directory."""
        token = sleep_token()
        code = f"import os\nos.system('/bin/sleep {token} &')\nwhile True: pass"
        task = asyncio.create_task(run("python", code, limits=Limits(timeout_s=10)))
        assert await host_uids_of(token), "the sleeper never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert processes_with(token) == []

    async def test_concurrent_runs_get_distinct_uids(self):
        """Runs in parallel each get their own uid and all succeed."""
        tokens = [sleep_token() for _ in range(6)]
        tasks = [
            asyncio.create_task(run("python", f"import subprocess\nsubprocess.run(['/bin/sleep', '{t}'], timeout=1.5)"))
            for t in tokens
        ]
        seen = await asyncio.gather(*(host_uids_of(t) for t in tokens))
        results = await asyncio.gather(*tasks)
        assert all(r.error and r.error.startswith("subprocess.TimeoutExpired") for r in results), results
        assert all(seen)
        if IS_ROOT:
            assert len({uids[0][0] for uids in seen}) == 6

    async def test_pool_bounds_concurrency_and_queue(self):
        """ExecutionPool runs max_concurrent at once, queues max_queue, refuses the rest."""
        pool = ExecutionPool(max_concurrent=1, max_queue=1)
        first, second = await start_sleeping_run(pool), await start_sleeping_run(pool)
        assert (pool.active, pool.queued) == (1, 1)
        with pytest.raises(QueueFull):
            await sleeping_run(pool)
        results = await asyncio.gather(first, second)
        assert [r.status for r in results] == ["ok", "ok"]
        assert (pool.active, pool.queued) == (0, 0)

    async def test_pool_queue_survives_cancellation(self):
        """A cancelled waiter gives its place back."""
        pool = ExecutionPool(max_concurrent=1, max_queue=2)
        first, waiting = await start_sleeping_run(pool), await start_sleeping_run(pool)
        waiting.cancel()
        await asyncio.sleep(0)
        assert pool.queued == 0
        assert (await first).status == "ok"
        assert pool.active == 0


@pytest.mark.skipif(not IS_ROOT, reason="the unsafe mode's uid sweep needs root")
class TestUnsafeMode:
    async def test_rlimits_only_mode_still_limits_and_sweeps(self, monkeypatch):
        """The explicit weaker mode runs code with limits, a clean env, and no survivors."""
        config = SandboxConfig(mode="unsafe-rlimits-only", work_root=WORK_ROOT)
        status = sandbox_status(config)
        assert status.usable
        assert not status.isolated
        monkeypatch.setenv("INTERVIEW_TEST_SECRET", "unsafe-secret")
        token = sleep_token()
        code = f"""
        import os, time
        print(os.environ.get("INTERVIEW_TEST_SECRET"), os.getuid() != 0)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{token}"])
            os._exit(0)
        time.sleep(0.3)
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        alive = [p for p in pids if b"{token}" in open(f"/proc/{{p}}/cmdline", "rb").read()]
        print("daemon running", len(alive))
        """
        result = await run("python", code, config=config)
        assert result.status == "ok", result
        assert result.stdout == "None True\ndaemon running 1\n"
        assert processes_with(token) == []
        spin = await run("python", "while True: pass", limits=SLOW, config=config)
        assert spin.status == "timeout"
