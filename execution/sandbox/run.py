"""One run, as named steps: check, take or build its box, write the source, compile, run, the verdict, clean up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from execution.sandbox import verdicts
from execution.sandbox.host.setup import Host, host_for, ready_host, ready_toolchains, toolchains
from execution.sandbox.languages import REGISTRY, Commands, Context, Language
from execution.sandbox.process import uncancellable
from execution.sandbox.spares import Box, BoxShape, Spares, box_open
from execution.sandbox.types import ExecutionResult, Limits, SandboxConfig
from execution.sandbox.workdir import write_source

_JAVAC_ARCHIVE_IN_SANDBOX = "/cds/javac.jsa"


@dataclass(frozen=True)
class _Run:
    """What every step of one run reads."""

    language: Language
    shape: BoxShape
    commands: Commands
    stdin: str
    started: float

    @property
    def limits(self) -> Limits:
        return self.shape.limits


async def run_code(
    *,
    language: str,
    code: str,
    stdin: str = "",
    limits: Limits | None = None,
    config: SandboxConfig | None = None,
    spares: Spares | None = None,
) -> ExecutionResult:
    """Compile if needed and run `code` in fresh sandboxes (a spare box if one is ready);
    never raises for bad programs."""
    started = time.monotonic()
    run = await _check(language, code, stdin, limits or Limits(), config or SandboxConfig(), started)
    if isinstance(run, ExecutionResult):
        return run
    box = spares.take(run.shape) if spares is not None else None
    try:
        if box is None:
            try:
                box = await box_open(run.shape)
            except OSError as exc:
                return _no_directory(exc, started)
        return await _execute(run, box, code)
    finally:
        if box is not None:
            await uncancellable(box.close())
        if spares is not None:
            spares.replenish(run.shape)


def _no_directory(exc: OSError, started: float) -> ExecutionResult:
    return verdicts.unavailable(f"Code execution is unavailable: cannot prepare a run directory ({exc})", started)


async def _execute(run: _Run, box: Box, code: str) -> ExecutionResult:
    """Write the source into the box, compile if the language does, run: the verdict."""
    try:
        write_source(box.workdir, run.commands.source, code)
    except OSError as exc:
        return _no_directory(exc, run.started)
    limits = run.limits
    if run.commands.compile is not None and box.compile is not None:
        out = await box.compile.go(run.commands.compile, b"", limits.compile_timeout_s)
        failure = verdicts.compile_failure(run.language, out, limits, run.started)
        if failure is not None:
            return failure
    assert box.run is not None
    out = await box.run.go(run.commands.run, run.stdin.encode("utf-8", errors="replace"), limits.timeout_s)
    return verdicts.run_verdict(run.language, out, limits, run.started)


async def _check(
    name: str, code: str, stdin: str, limits: Limits, config: SandboxConfig, started: float
) -> _Run | ExecutionResult:
    """The run's language, host and toolchain, or the answer saying which one is unavailable."""
    language = REGISTRY.get(name)
    if language is None:
        return verdicts.unavailable(f"Unsupported language: {name}", started)
    host = ready_host(config) or await asyncio.to_thread(host_for, config)
    if not host.status.usable:
        return verdicts.unavailable(f"Code execution is unavailable: {host.status.reason}", started)
    statuses = ready_toolchains(config) or await asyncio.to_thread(toolchains, config)
    if not statuses[name].available:
        return verdicts.unavailable(f"{language.LABEL} is not available: {statuses[name].reason}", started)
    shape = _shape(language, host, limits, config)
    commands = language.commands(code, shape.context)
    return _Run(language, shape, commands, stdin, started)


def box_shape(name: str, limits: Limits, config: SandboxConfig) -> BoxShape | None:
    """The shape of a run's box for this language, if the host and its toolchain are set up and usable."""
    language, host, statuses = REGISTRY.get(name), ready_host(config), ready_toolchains(config)
    if language is None or host is None or statuses is None:
        return None
    if not host.status.usable or not statuses[name].available:
        return None
    return _shape(language, host, limits, config)


def _shape(language: Language, host: Host, limits: Limits, config: SandboxConfig) -> BoxShape:
    compile_binds: tuple[tuple[str, str], ...] = ()
    archive = host.javac_archive if language.NAME == "java" else None
    if archive and config.mode == "bwrap":
        compile_binds, archive = ((archive, _JAVAC_ARCHIVE_IN_SANDBOX),), _JAVAC_ARCHIVE_IN_SANDBOX
    toolchain = host.toolchains[language.NAME]
    memory_cgroup = any("memory" in h.controllers for h in host.cgroups)
    context = Context(toolchain, limits, memory_cgroup=memory_cgroup, compiler_archive=archive)
    return BoxShape(language, limits, compile_binds, host=host, toolchain=toolchain, context=context)
