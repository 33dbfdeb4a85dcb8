"""C++: g++ compiles main.cpp, then ./main runs."""

from __future__ import annotations

import re

from execution.sandbox.host.toolchains import Toolchain, prefix_binds, resolve_binary
from execution.sandbox.languages.base import Commands, Context
from execution.sandbox.types import SandboxConfig

NAME = "cpp"
LABEL = "C++"
MEMORY_KIND = "native"
VERSION_COMMAND = ("gxx", ("--version",))
COMPILED = True
COMPILE_ERROR = re.compile(r"error:")
ENV: dict[str, str] = {}

_COMPILE = ["-std=gnu++17", "-O2", "-pipe", "-fdiagnostics-color=never", "-o", "main", "main.cpp"]


def find_toolchain(config: SandboxConfig) -> Toolchain:
    gxx = resolve_binary(config.gxx_path, ["g++"])
    if gxx is None:
        return Toolchain("cpp", {}, missing="g++ not found (install g++ or set gxx_path)")
    return Toolchain("cpp", {"gxx": gxx}, binds=prefix_binds(gxx))


def commands(code: str, context: Context) -> Commands:
    return Commands("main.cpp", [context.toolchain.binaries["gxx"], *_COMPILE], ["./main"])


def error_line(stderr: str, lines: list[str]) -> str | None:
    """An uncaught exception: `terminate called ...` and its what()."""
    for i, ln in enumerate(lines):
        if ln.startswith("terminate called"):
            if i + 1 < len(lines) and lines[i + 1].strip().startswith("what():"):
                return f"{ln}: {lines[i + 1].strip()[len('what():') :].strip()}"
            return ln
    return None


def out_of_memory(stderr: str) -> bool:
    return "std::bad_alloc" in stderr
