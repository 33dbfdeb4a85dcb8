"""What callers hand the sandbox and what it answers: limits, configuration, results, statuses."""

from __future__ import annotations

import enum
import os
import sys
from dataclasses import dataclass, field, fields


class Status(enum.StrEnum):
    """How a run ended; a str enum, so the values on the wire are these plain strings."""

    OK = "ok"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    UNAVAILABLE = "unavailable"

    @classmethod
    def values(cls) -> list[str]:
        """The wire values, in order (the API's choices)."""
        return [status.value for status in cls]


def default_python() -> str:
    """The base interpreter (not a venv's wrapper), resolved to its real file."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@dataclass(frozen=True)
class Limits:
    """Per-run limits; all configurable by the caller (from settings)."""

    timeout_s: float = 5.0  # wall time of the run stage
    compile_timeout_s: float = 15.0  # wall time of a compile stage (g++ / javac)
    memory_mb: int = 256  # the program's memory (see the package docstring per language)
    max_processes: int = 64  # processes + threads of the program
    output_bytes: int = 1_000_000  # stdout + stderr together, per stage
    file_size_mb: int = 16  # largest file the program may write
    open_files: int = 64
    compile_memory_mb: int = 1024  # memory of a compile stage
    disk_mb: int = 64  # size of the run's own filesystem (/box, /tmp and /dev/shm together)
    disk_inodes: int = 4096  # files, directories and links in it (without one: /tmp, /dev/shm of disk_mb each)


@dataclass(frozen=True)
class SandboxConfig:
    """How to sandbox: from settings, fixed for the life of the process."""

    mode: str = "bwrap"  # "bwrap" or "unsafe-rlimits-only" (no namespaces: explicit opt-in)
    bwrap_path: str = "bwrap"
    python_path: str = field(default_factory=default_python)
    node_path: str | None = None  # None: look up on PATH
    gxx_path: str | None = None
    javac_path: str | None = None
    java_path: str | None = None
    work_root: str | None = None  # parent of the per-run directories; None: tempfile.gettempdir()
    uid_base: int = 60000  # first uid/gid of the per-run range (used only when running as root)
    uid_count: int = 256
    cgroups: bool = True  # use per-run cgroups where the hierarchy is writable


def _wire(name: str, help_text: str = "") -> dict[str, str]:
    """A result field's name in the contract's JSON and its description in the schema."""
    return {"wire": name, "help": help_text}


@dataclass(frozen=True)
class ExecutionResult:
    """A run's answer; the field metadata is the contract's shape (as_dict and the API schema)."""

    success: bool = field(metadata=_wire("success", "True only for a normal exit with code 0 within the limits."))
    stdout: str = field(metadata=_wire("stdout"))
    stderr: str = field(metadata=_wire("stderr"))
    exit_code: int | None = field(
        metadata=_wire("exitCode", "The exit status (128+N for signal N); null if the program did not end itself.")
    )
    execution_time_ms: int = field(metadata=_wire("executionTime", "Wall time in milliseconds."))
    error: str | None = field(metadata=_wire("error", "Null on success, else a short sentence."))
    status: Status = field(metadata=_wire("status"))
    truncated: bool = field(default=False, metadata=_wire("truncated", "Output was cut at the output limit."))

    def as_dict(self) -> dict:
        """The contract's JSON shape (camelCase)."""
        return {wire: getattr(self, name) for name, wire in _RESULT_WIRE_NAMES}


_RESULT_WIRE_NAMES = tuple((f.name, f.metadata["wire"]) for f in fields(ExecutionResult))


@dataclass(frozen=True)
class SandboxStatus:
    isolated: bool  # namespaces usable (mode "bwrap" and the trial sandbox ran)
    mode: str
    reason: str | None  # why not isolated / not usable; None when all is well
    usable: bool = False  # run_code will run programs (isolated, or the explicit weaker mode)
    per_run_uid: bool = False  # programs run as a dedicated unprivileged uid per run
    cgroups: tuple[str, ...] = ()  # controllers used per run, e.g. ("memory", "pids")
    bwrap_version: str | None = None
    seccomp: bool = False  # every stage runs under the system-call filter (host/seccomp.py)
    seccomp_note: str | None = None  # why there is no filter, or what it lacks; None when all is well
    disk_limited: bool = False  # each run has a filesystem of its own, limited in size and inodes
    disk_reason: str | None = None  # why not (then /box is a directory on the host's disk)

    def as_dict(self) -> dict:
        return {
            "isolated": self.isolated,
            "usable": self.usable,
            "mode": self.mode,
            "reason": self.reason,
            "perRunUid": self.per_run_uid,
            "cgroups": list(self.cgroups),
            "bwrapVersion": self.bwrap_version,
            "seccomp": self.seccomp,
            "seccompNote": self.seccomp_note,
            "diskLimited": self.disk_limited,
            "diskReason": self.disk_reason,
        }


@dataclass(frozen=True)
class ToolchainStatus:
    language: str
    available: bool
    version: str | None = None
    reason: str | None = None  # why unavailable

    def as_dict(self) -> dict:
        return {"language": self.language, "available": self.available, "version": self.version, "reason": self.reason}
