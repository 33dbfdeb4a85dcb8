"""run_code in a real sandbox: the probe, every language, without cgroups, the unsafe mode (no Django)."""

import asyncio
import os
import stat
import time

import pytest

from execution.sandbox import LANGUAGES, Limits, SandboxConfig, sandbox_status, toolchains
from execution.tests.helpers import (
    IS_ROOT,
    SLOW,
    STATUS,
    TOOLCHAINS,
    WORK_ROOT,
    needs,
    needs_sandbox,
    processes_with,
    run,
    sleep_token,
)

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]


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
