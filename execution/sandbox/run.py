"""One run, as named steps: check, prepare the directory, compile, run, collect the verdict, clean up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from execution.sandbox import verdicts
from execution.sandbox.host.setup import Host, host_for, ready_host, ready_toolchains, toolchains
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.host.uids import uid_slot
from execution.sandbox.languages import REGISTRY, Commands, Context, Language
from execution.sandbox.process import Stage, run_stage, uncancellable
from execution.sandbox.types import ExecutionResult, Limits, SandboxConfig
from execution.sandbox.workdir import Workdir, make_workdir, remove_workdir

_JAVAC_ARCHIVE_IN_SANDBOX = "/cds/javac.jsa"


@dataclass(frozen=True)
class _Run:
    """What every step of one run reads."""

    language: Language
    host: Host
    toolchain: Toolchain
    limits: Limits
    commands: Commands
    stdin: str
    started: float
    compile_binds: tuple[tuple[str, str], ...] = ()  # (host file, path inside), read-only


async def run_code(
    *,
    language: str,
    code: str,
    stdin: str = "",
    limits: Limits | None = None,
    config: SandboxConfig | None = None,
) -> ExecutionResult:
    """Compile if needed and run `code` in a fresh sandbox; never raises for bad programs."""
    started = time.monotonic()
    run = await _check(language, code, stdin, limits or Limits(), config or SandboxConfig(), started)
    if isinstance(run, ExecutionResult):
        return run
    async with uid_slot(run.host.uids) as uid:
        try:
            workdir = make_workdir(
                run.host.work_root,
                run.commands.source,
                code,
                uid,
                tmpfs=run.host.run_fs,
                size_bytes=run.limits.disk_mb << 20,
                inodes=run.limits.disk_inodes,
            )
        except OSError as exc:
            message = f"Code execution is unavailable: cannot prepare a run directory ({exc})"
            return verdicts.unavailable(message, started)
        try:
            if run.commands.compile is not None:
                out = await run_stage(run.host, _stage(run, run.commands.compile, workdir, uid, compiling=True))
                failure = verdicts.compile_failure(run.language, out, run.limits, started)
                if failure is not None:
                    return failure
            out = await run_stage(run.host, _stage(run, run.commands.run, workdir, uid, compiling=False))
            return verdicts.run_verdict(run.language, out, run.limits, started)
        finally:
            await uncancellable(asyncio.to_thread(remove_workdir, workdir))


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
    compile_binds: tuple[tuple[str, str], ...] = ()
    archive = host.javac_archive if language.NAME == "java" else None
    if archive and config.mode == "bwrap":
        compile_binds, archive = ((archive, _JAVAC_ARCHIVE_IN_SANDBOX),), _JAVAC_ARCHIVE_IN_SANDBOX
    toolchain = host.toolchains[name]
    memory_cgroup = any("memory" in h.controllers for h in host.cgroups)
    context = Context(toolchain, limits, memory_cgroup=memory_cgroup, compiler_archive=archive)
    commands = language.commands(code, context)
    return _Run(language, host, toolchain, limits, commands, stdin, started, compile_binds)


def _stage(run: _Run, cmd: list[str], workdir: Workdir, uid: int | None, *, compiling: bool) -> Stage:
    """The compile or the run stage: the same sandbox, each with the limits of its kind."""
    limits = run.limits
    if compiling:
        timeout_s, memory_mb = limits.compile_timeout_s, limits.compile_memory_mb
        nproc, nofile = max(limits.max_processes, 64), max(limits.open_files, 256)
        stdin, binds = b"", run.compile_binds
    else:
        timeout_s, memory_mb = limits.timeout_s, limits.memory_mb
        nproc, nofile = limits.max_processes, limits.open_files
        stdin, binds = run.stdin.encode("utf-8", errors="replace"), ()
    return Stage(
        cmd=cmd,
        toolchain=run.toolchain,
        timeout_s=timeout_s,
        limits=limits,
        memory_kind=run.language.MEMORY_KIND,
        memory_mb=memory_mb,
        nproc=nproc,
        nofile=nofile,
        env=run.language.ENV,
        stdin=stdin,
        workdir=workdir,
        uid=uid,
        extra_binds=binds,
    )
