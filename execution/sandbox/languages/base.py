"""What a language is to the sandbox: its toolchain, its commands, and how to read its errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.types import Limits, SandboxConfig


@dataclass(frozen=True)
class Commands:
    """One program's commands, relative to the run directory."""

    source: str  # file name of the code in the run directory
    compile: list[str] | None
    run: list[str]


@dataclass(frozen=True)
class Context:
    """What a language's commands may depend on besides the code."""

    toolchain: Toolchain
    limits: Limits
    memory_cgroup: bool  # a memory cgroup bounds the resident total, so reservations may be large
    compiler_archive: str | None = None  # javac's class-data archive as the compile stage sees it


class Language(Protocol):
    """A language is a module of this shape (languages/python.py, ...): constants and four functions."""

    NAME: str  # the API's value
    LABEL: str  # the name in sentences ("C++ is not available")
    COMPILED: bool  # a compile stage comes before the run stage (its commands' `compile` is set)
    MEMORY_KIND: str  # "native" (RLIMIT_AS = memory) or "managed" (JVM / V8: a heap flag, AS = memory + slack)
    VERSION_COMMAND: tuple[str, tuple[str, ...]]  # (binary role, arguments) printing the version
    COMPILE_ERROR: re.Pattern[str] | None  # the first line matching it is the compile error
    ENV: dict[str, str]  # added to the sandbox's environment

    def find_toolchain(self, config: SandboxConfig) -> Toolchain: ...

    def commands(self, code: str, context: Context) -> Commands: ...

    def error_line(self, stderr: str, lines: list[str]) -> str | None:
        """The error in stderr (given its non-blank lines), if recognised."""

    def out_of_memory(self, stderr: str) -> bool:
        """stderr says the program ran out of memory."""
