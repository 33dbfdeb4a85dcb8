"""Toolchains: where a language's binaries are and what each needs bound inside the sandbox."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Toolchain:
    language: str
    binaries: dict[str, str]  # role -> real path ("python", "node", "gxx", "javac", "java")
    binds: tuple[str, ...] = ()  # extra read-only directories (same path inside)
    bind_files: tuple[str, ...] = ()  # extra read-only files
    hide: tuple[str, ...] = ()  # directories covered by an empty read-only tmpfs
    missing: str | None = None  # why unavailable


ALWAYS_BOUND = ("/usr",)


def resolve_binary(path: str | None, names: Sequence[str]) -> str | None:
    candidates = [path] if path else [shutil.which(n) for n in names]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.realpath(c)
    return None


def prefix_binds(binary: str) -> tuple[str, ...]:
    """The install prefix of a binary outside /usr (its bin/'s parent)."""
    if path_is_under(binary, ALWAYS_BOUND):
        return ()
    return (os.path.dirname(os.path.dirname(binary)),)


def path_is_under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)
