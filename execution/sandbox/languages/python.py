"""Python: the server's own base interpreter in isolated mode, its site-packages hidden."""

from __future__ import annotations

import os
import re
import subprocess

from execution.sandbox.host.toolchains import ALWAYS_BOUND, Toolchain, path_is_under, prefix_binds, resolve_binary
from execution.sandbox.languages.base import Commands, Context
from execution.sandbox.process import Waiting
from execution.sandbox.types import SandboxConfig

NAME = "python"
LABEL = "Python"
MEMORY_KIND = "native"
VERSION_COMMAND = ("python", ("-I", "-S", "-c", "import sys; print('Python ' + sys.version.split()[0])"))
COMPILED = False
COMPILE_ERROR = None
ENV: dict[str, str] = {}

_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?::.*)?$")


def find_toolchain(config: SandboxConfig) -> Toolchain:
    py = resolve_binary(config.python_path, ["python3"])
    if py is None:
        return Toolchain("python", {}, missing=f"Python interpreter not found ({config.python_path})")
    try:
        out = subprocess.run(
            [
                py,
                "-I",
                "-S",
                "-c",
                "import sys, sysconfig; p = sysconfig.get_paths()\n"
                "print(sys.prefix); print(sys.exec_prefix); print(p['purelib']); print(p['platlib'])",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            env={"PATH": "/usr/bin:/bin"},
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError) as exc:
        return Toolchain("python", {}, missing=f"Python interpreter {py} does not start: {exc}")
    prefix, exec_prefix, purelib, platlib = (os.path.realpath(p) for p in out[:4])
    binds = tuple(sorted({p for p in (prefix, exec_prefix) if not path_is_under(p, ALWAYS_BOUND)}))
    binds = tuple(b for b in binds if not any(b != o and path_is_under(b, [o]) for o in binds))
    if not path_is_under(py, (*ALWAYS_BOUND, *binds)):
        binds += prefix_binds(py)
    hide = tuple(sorted({p for p in (purelib, platlib) if os.path.isdir(p)}))
    return Toolchain("python", {"python": py}, binds=binds, hide=hide)


def commands(code: str, context: Context) -> Commands:
    # Unbuffered so that output printed before a crash or a timeout is kept; not -S, which
    # would drop exit() for about 1 ms.
    return Commands("main.py", None, [context.toolchain.binaries["python"], "-I", "-B", "-u", "main.py"])


# A Python box's run stage waits in the interpreter itself, started with the flags of
# `commands` (so with `site`, as a script run has it): its start-up, most of a short run's
# time, is paid before the program is known. Given its line (the run's CPU limit), it runs
# /box/main.py as `python -I -B -u main.py` would: a fresh `__main__` module, `sys.argv`,
# the absolute `__file__`, tracebacks through `sys.excepthook` without the stub's frames,
# exit code 1 after an uncaught exception, and the rest of stdin left for the program.
_STUB = """
import sys


def _run():
    import os
    import resource
    import types

    header = sys.stdin.buffer.readline().split()
    if len(header) != 2:
        raise SystemExit(0)  # closed before a program came
    resource.setrlimit(resource.RLIMIT_CPU, (int(header[0]), int(header[1])))
    os.environ.pop("PWD", None)
    path = os.path.abspath("main.py")
    main = types.ModuleType("__main__")
    main.__file__, main.__cached__ = path, None
    sys.modules["__main__"] = main
    sys.argv[:] = ["main.py"]
    try:
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec", dont_inherit=True)
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and tb is None:
            import traceback

            traceback.print_exception(type(exc), exc, None)
        else:
            # The default hook prints the exception's own traceback, not its argument.
            sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        raise SystemExit(1) from None


_run()
"""


def waiting(toolchain: Toolchain) -> Waiting:
    """The interpreter waiting for its program, and the line that starts it (the CPU limit)."""
    argv = [toolchain.binaries["python"], "-I", "-B", "-u", "-c", _STUB]
    return Waiting(argv, lambda _cmd, soft, hard: f"{soft} {hard}\n")


def error_line(stderr: str, lines: list[str]) -> str | None:
    """The exception line of a traceback (the last unindented line naming an exception)."""
    if lines and ("Traceback (most recent call last):" in stderr or re.search(r"^\w*Error\b", stderr, re.M)):
        for ln in reversed(lines):
            if not ln[0].isspace() and _EXCEPTION.match(ln) and not ln.startswith("Traceback"):
                return ln
    return None


def out_of_memory(stderr: str) -> bool:
    return bool(re.search(r"^MemoryError\b", stderr, re.M))
