"""JavaScript: Node.js with V8's heap bounded by the memory limit."""

from __future__ import annotations

import re

from execution.sandbox.host.toolchains import Toolchain, prefix_binds, resolve_binary
from execution.sandbox.languages.base import Commands, Context
from execution.sandbox.types import SandboxConfig

NAME = "javascript"
LABEL = "JavaScript"
MEMORY_KIND = "managed"
VERSION_COMMAND = ("node", ("--version",))
COMPILED = False
COMPILE_ERROR = None
ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}

_ERROR = re.compile(r"^(?:Uncaught )?(?:[A-Z][\w$]*)?(?:Error|Exception)(?: \[[\w_]+\])?(?::.*)?$")
_OUT_OF_MEMORY = ("JavaScript heap out of memory", "Reached heap limit", "Array buffer allocation failed")


def find_toolchain(config: SandboxConfig) -> Toolchain:
    node = resolve_binary(config.node_path, ["node", "nodejs"])
    if node is None:
        return Toolchain("javascript", {}, missing="Node.js not found (install nodejs or set node_path)")
    return Toolchain("javascript", {"node": node}, binds=prefix_binds(node))


def commands(code: str, context: Context) -> Commands:
    node = context.toolchain.binaries["node"]
    return Commands("main.js", None, [node, f"--max-old-space-size={context.limits.memory_mb}", "main.js"])


def error_line(stderr: str, lines: list[str]) -> str | None:
    return next((ln for ln in lines if _ERROR.match(ln)), None)


def out_of_memory(stderr: str) -> bool:
    return any(s in stderr for s in _OUT_OF_MEMORY)
