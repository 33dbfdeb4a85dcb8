"""From a stage's outcome to the answer: a status and a short sentence saying what happened."""

from __future__ import annotations

import contextlib
import signal
import time

from execution.sandbox.languages import Language
from execution.sandbox.process import Outcome, decode
from execution.sandbox.types import ExecutionResult, Limits, Status

_COMPILER_OOM = ("out of memory", "virtual memory exhausted", "OutOfMemoryError", "std::bad_alloc")


def result(
    started: float,
    status: Status,
    *,
    stdout: str = "",
    stderr: str = "",
    exit_code: int | None = None,
    error: str | None = None,
    truncated: bool = False,
) -> ExecutionResult:
    """The answer; its time is the whole call's so far (directory, compile, run)."""
    return ExecutionResult(
        success=status == Status.OK,
        stdout=stdout,
        stderr=stderr,
        exit_code=exit_code,
        execution_time_ms=int((time.monotonic() - started) * 1000),
        error=error,
        status=status,
        truncated=truncated,
    )


def unavailable(message: str, started: float) -> ExecutionResult:
    return result(started, Status.UNAVAILABLE, error=message)


def compile_failure(language: Language, out: Outcome, limits: Limits, started: float) -> ExecutionResult | None:
    """The answer when the compile stage did not succeed (its errors, time or memory); None if it did."""
    if out.start_error:
        return unavailable(out.start_error, started)
    if not (out.timed_out or out.cpu_limited or out.output_capped or out.oom_killed or out.returncode != 0):
        return None
    stderr = decode(out.stdout) + decode(out.stderr)
    if out.timed_out or out.cpu_limited:
        error = f"Compilation time limit exceeded ({_seconds(limits.compile_timeout_s)} s)"
    elif out.oom_killed or any(s in stderr for s in _COMPILER_OOM):
        error = "Compilation memory limit exceeded"
    else:
        error = _compile_error_line(language, stderr)
    return result(started, Status.COMPILE_ERROR, stderr=stderr, error=error, truncated=out.output_capped)


def run_verdict(language: Language, out: Outcome, limits: Limits, started: float) -> ExecutionResult:
    """The answer of the run stage: which limit stopped it, or how it ended."""
    if out.start_error:
        return unavailable(out.start_error, started)
    stdout, stderr = decode(out.stdout), decode(out.stderr)
    done = {"stdout": stdout, "stderr": stderr, "truncated": out.output_capped}
    if out.output_capped:
        error = f"Output limit exceeded ({limits.output_bytes} bytes)"
        return result(started, Status.OUTPUT_LIMIT, error=error, **done)
    if out.timed_out or out.cpu_limited:
        return result(started, Status.TIMEOUT, error=f"Time limit exceeded ({_seconds(limits.timeout_s)} s)", **done)
    code = out.returncode if out.returncode is not None else -1
    if out.oom_killed or (code != 0 and language.out_of_memory(stderr)):
        return result(started, Status.MEMORY_LIMIT, error="Memory limit exceeded", exit_code=code, **done)
    if code == 0:
        return result(started, Status.OK, exit_code=0, **done)
    error = _runtime_error_line(language, stderr, code)
    return result(started, Status.RUNTIME_ERROR, error=error, exit_code=code, **done)


def _seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _runtime_error_line(language: Language, stderr: str, code: int) -> str:
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    return language.error_line(stderr, lines) or _exit_sentence(code)


def _exit_sentence(code: int) -> str:
    name = None
    if 128 < code < 128 + 65:
        with contextlib.suppress(ValueError):
            name = signal.Signals(code - 128).name
    return f"Killed by signal {name}" if name else f"Process exited with code {code}"


def _compile_error_line(language: Language, stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    pattern = language.COMPILE_ERROR
    first = next((ln for ln in lines if pattern and pattern.search(ln)), None)
    return first or (lines[0] if lines else "Compilation failed")
