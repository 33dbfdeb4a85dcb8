"""The limits of a run in a real sandbox: time, output, files, processes, memory, stdin, /tmp (no Django)."""

import asyncio
import time

import pytest

from execution.sandbox import Limits
from execution.tests.helpers import SLOW, needs, needs_sandbox, run

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]


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
        """/tmp is writable, bounded by disk_mb, and not the host's."""
        code = """
        import os
        with open('/tmp/f', 'wb') as f:
            try:
                f.write(b'x' * (8 << 20))
            except OSError as e:
                print('full', e.errno)
        """
        result = await run("python", code, limits=Limits(disk_mb=4))
        assert "full 28" in result.stdout  # ENOSPC
