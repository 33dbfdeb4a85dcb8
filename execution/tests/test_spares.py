"""Sandboxes built ahead of time: each serves one run, nothing of a run reaches the next, and the
stock is rebuilt after each use (real sandbox, no Django)."""

import asyncio
import os
import signal
import textwrap
import time

import pytest

from execution.sandbox import Limits, Spares, run_code, toolchains
from execution.sandbox.run import box_shape
from execution.tests.helpers import CONFIG, needs_sandbox, processes_with, sleep_token
from interview.testing import PATIENCE_SECONDS

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]

LIMITS = Limits(timeout_s=5)


async def ready_spares(count: int, language: str = "python") -> tuple[Spares, object]:
    """A stock of `count` spares for `language`, every one of them built and waiting."""
    await asyncio.to_thread(toolchains, CONFIG)  # the host and its toolchains are set up
    spares = Spares(count, max_timeout_s=10)
    shape = box_shape(language, LIMITS, CONFIG)
    assert shape is not None
    spares.replenish(shape)
    await until_ready(spares, shape, count)
    return spares, shape


async def until_ready(spares: Spares, shape, count: int) -> None:
    async with asyncio.timeout(PATIENCE_SECONDS):
        await spares.wait_built(shape, count)


async def run_on(spares: Spares, code: str, language: str = "python"):
    return await run_code(language=language, code=textwrap.dedent(code), limits=LIMITS, config=CONFIG, spares=spares)


class TestSpares:
    async def test_a_run_leaves_nothing_for_the_next(self):
        """Run 1 writes everywhere it may, leaves a daemon, changes its environment and fills its
        memory; run 2, in the spare built beside it, finds none of it."""
        spares, _shape = await ready_spares(2)
        token = sleep_token()
        try:
            first = await run_on(
                spares,
                f"""
                import os, subprocess
                for place in ("/box", "/tmp", "/dev/shm", os.environ["HOME"]):
                    with open(os.path.join(place, "left-behind"), "w") as f:
                        f.write("run 1")
                os.environ["LEFT_BEHIND"] = "run 1"
                os.putenv("LEFT_BEHIND", "run 1")
                subprocess.Popen(["/bin/sleep", "{token}"], start_new_session=True)
                hog = bytearray(150 * 1024 * 1024)
                for i in range(0, len(hog), 4096):
                    hog[i] = 1
                print("left", len(os.listdir("/box")))
                """,
            )
            assert first.stdout == "left 2\n", first  # main.py and the file
            assert processes_with(token) == []
            second = await run_on(
                spares,
                """
                import os
                found = [p for p in ("/box", "/tmp", "/dev/shm") for n in os.listdir(p) if n != "main.py"]
                others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
                hog = bytearray(200 * 1024 * 1024)  # the whole limit is there: nothing of run 1 is charged here
                print(found, os.environ.get("LEFT_BEHIND"), len(others) <= 1)
                """,
            )
            assert second.stdout == "[] None True\n", second  # pid 1 (bwrap's init) is the one other process
        finally:
            await spares.close()

    async def test_each_box_serves_one_run_and_the_stock_is_rebuilt(self):
        """A run takes a ready spare (built before its program existed); the stock is whole again after."""
        spares, shape = await ready_spares(1)
        try:
            box = spares.take(shape)
            assert box is not None and box.alive
            assert spares.take(shape) is None  # one spare: gone until rebuilt
            await box.close()
            spares.replenish(shape)
            await until_ready(spares, shape, 1)
            result = await run_on(spares, "import os; print(os.getcwd())")
            assert result.stdout == "/box\n"
            await until_ready(spares, shape, 1)  # rebuilt after the run
            with pytest.raises(RuntimeError):
                await box.run.go(["/bin/true"], b"", 1)  # a used box never runs again
        finally:
            await spares.close()

    async def test_a_spare_that_died_is_not_used(self):
        """A spare whose sandbox was killed while it waited is thrown away; the run builds its own."""
        spares, shape = await ready_spares(1)
        try:
            (box,) = spares._ready[spares.key(shape)]
            os.killpg(box.run.proc.pid, signal.SIGKILL)
            async with asyncio.timeout(PATIENCE_SECONDS):
                await box.run.outer_exited
            result = await run_on(spares, "print('ran')")
            assert result.stdout == "ran\n", result
        finally:
            await spares.close()

    async def test_a_run_gets_its_own_time_limit_in_a_spare_built_for_the_longest(self):
        """Spares are built with the longest run's CPU limit; each run's command lowers it to its own."""
        spares, _shape = await ready_spares(1)
        try:
            started = time.monotonic()
            result = await run_code(
                language="python",
                code="import resource\nprint(resource.getrlimit(resource.RLIMIT_CPU), flush=True)\nwhile True: pass",
                limits=Limits(timeout_s=1),
                config=CONFIG,
                spares=spares,
            )
            assert result.status == "timeout"
            assert result.stdout == "(2, 3)\n"  # ceil(1) + 1 s, SIGKILL a second later
            assert time.monotonic() - started < 5
        finally:
            await spares.close()

    @pytest.mark.parametrize("language", ["cpp", "java"])
    async def test_compiled_languages_compile_and_run_in_one_box(self, language):
        """A compiled language's box holds a compile and a run sandbox over one filesystem."""
        code = {
            "cpp": '#include <cstdio>\nint main() { std::puts("compiled"); }',
            "java": 'public class Main { public static void main(String[] a) { System.out.println("compiled"); } }',
        }[language]
        spares, shape = await ready_spares(1, language)
        try:
            result = await run_on(spares, code, language)
            assert result.stdout == "compiled\n", result
            assert spares.ready(shape) == 0  # it ran in the spare (whose replacement is being built)
        finally:
            await spares.close()


async def test_a_python_program_started_by_the_waiting_interpreter_runs_as_a_script():
    """A Python box waits in its interpreter: the program still sees what `python -I main.py`
    gives it (its own `__main__`, argv, the absolute __file__, stdin after the start line, no
    PWD) and its traceback has none of the stub's frames."""
    from execution import services

    code = (
        "import os, sys\n"
        "print(__name__, __file__, sys.argv, 'PWD' in os.environ, sorted(k for k in globals() if k[0] != '_'))\n"
        "print(input())\n"
        "def f():\n"
        "    raise ValueError('boom')\n"
        "f()\n"
    )
    result = await services.execution_run(language="python", code=code, stdin="line one\n", timeout_s=5)
    assert result.stdout == "__main__ /box/main.py ['main.py'] False ['os', 'sys']\nline one\n"
    assert result.exit_code == 1 and result.error == "ValueError: boom"
    assert result.stderr.startswith('Traceback (most recent call last):\n  File "/box/main.py", line 6, in <module>')
    assert "<string>" not in result.stderr
