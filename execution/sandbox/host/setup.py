"""The host's set-up for a config: find bwrap and the toolchains, allocate uids, mount, try a sandbox."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field

from execution.sandbox.host.cgroups import CgroupHierarchy, writable_hierarchies
from execution.sandbox.host.javac_archive import javac_archive
from execution.sandbox.host.mountns import first_blocking_ancestor, toolchain_mount_namespace
from execution.sandbox.host.runfs import TmpfsMaker, tmpfs_maker
from execution.sandbox.host.seccomp import compile_filter, sealed_memfd
from execution.sandbox.host.toolchains import Toolchain, path_is_under, resolve_binary
from execution.sandbox.host.uids import UidSlots, free_uid_range, uid_slot
from execution.sandbox.languages import LANGUAGES, REGISTRY
from execution.sandbox.process import Outcome, Stage, decode, in_fresh_loop, run_stage, run_stage_with_own_uid
from execution.sandbox.types import Limits, SandboxConfig, SandboxStatus, ToolchainStatus, default_python
from execution.sandbox.workdir import make_workdir, remove_workdir


@dataclass
class Host:
    """What this host gives runs under one config: bwrap and its features, the toolchains, the
    mount namespace, the uid slots, the cgroups; set up once and tried with a real sandbox."""

    status: SandboxStatus
    config: SandboxConfig
    bwrap: str | None = None
    bwrap_features: frozenset[str] = frozenset()
    root_links: tuple[tuple[str, str], ...] = ()  # ("/bin", "usr/bin") symlinks; ("/lib", "") real dirs
    toolchains: dict[str, Toolchain] = field(default_factory=dict)
    mntns_fd: int | None = None
    uids: UidSlots | None = None
    cgroups: tuple[CgroupHierarchy, ...] = ()
    kill_binary: str | None = None
    work_root: str = ""
    javac_archive: str | None = None  # host path of a sealed AppCDS archive that speeds javac up
    seccomp_fd: int | None = None  # a sealed memfd holding the system-call filter (bwrap mode)
    run_fs: TmpfsMaker | None = None  # makes each run's own filesystem (None: a directory on the disk)


_STATE_LOCK = threading.Lock()
_HOSTS: dict[SandboxConfig, Host] = {}
_TOOLCHAIN_STATUS: dict[SandboxConfig, dict[str, ToolchainStatus]] = {}


def sandbox_status(config: SandboxConfig | None = None) -> SandboxStatus:
    """Whether and how programs can be sandboxed here; probed once (a trial sandbox really runs)."""
    return host_for(config or SandboxConfig()).status


def ready_host(config: SandboxConfig) -> Host | None:
    """The host if already set up for this config (no waiting, no thread hop)."""
    return _HOSTS.get(config)


def ready_toolchains(config: SandboxConfig) -> dict[str, ToolchainStatus] | None:
    return _TOOLCHAIN_STATUS.get(config)


def host_for(config: SandboxConfig) -> Host:
    """The host set up for this config (once per process)."""
    host = _HOSTS.get(config)
    if host is None:
        with _STATE_LOCK:
            host = _HOSTS.get(config)
            if host is None:
                host = _HOSTS[config] = _set_up_host(config)
    return host


def _set_up_host(config: SandboxConfig) -> Host:
    mode = config.mode
    if mode not in ("bwrap", "unsafe-rlimits-only"):
        return Host(SandboxStatus(False, mode, f"unknown sandbox mode {mode!r}"), config)
    is_root = os.geteuid() == 0
    work_root = os.path.realpath(config.work_root or tempfile.gettempdir())
    host = Host(SandboxStatus(False, mode, None), config, work_root=work_root)
    if not os.path.isdir(work_root):
        host.status = SandboxStatus(False, mode, f"work_root {work_root} is not a directory")
        return host
    host.toolchains = {lang: REGISTRY[lang].find_toolchain(config) for lang in LANGUAGES}
    host.kill_binary = resolve_binary(None, ["kill"])
    if is_root:
        uids = free_uid_range(config.uid_base, config.uid_count)
        if not uids:
            host.status = SandboxStatus(False, mode, f"no free uid in {config.uid_base}+{config.uid_count}")
            return host
        host.uids = UidSlots(uids)
        needed = [work_root]
        for tc in host.toolchains.values():
            needed += [*tc.binds, *tc.binaries.values()]
        needed = sorted({d if os.path.isdir(d) else os.path.dirname(d) for d in needed})
        needed = [d for d in needed if first_blocking_ancestor(d)]
        needed = [d for d in needed if not any(d != o and path_is_under(d, [o]) for o in needed)]
        if needed:
            fd, err = toolchain_mount_namespace(tuple(needed))
            if err:
                host.status = SandboxStatus(False, mode, err)
                return host
            host.mntns_fd = fd
    if config.cgroups:
        try:
            host.cgroups = tuple(writable_hierarchies())
        except OSError:
            host.cgroups = ()
    per_run_uid = host.uids is not None
    version = None
    seccomp_note = "no system-call filter without bwrap (unsafe-rlimits-only)"
    if mode == "bwrap":
        path = config.bwrap_path
        bwrap = resolve_binary(path, []) if "/" in path else resolve_binary(None, [path])
        if bwrap is None:
            host.status = SandboxStatus(False, mode, "bwrap not found", per_run_uid=per_run_uid)
            return host
        host.bwrap = bwrap
        try:
            help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
            version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            host.status = SandboxStatus(False, mode, f"bwrap does not start: {exc}")
            return host
        host.bwrap_features = frozenset(f for f in ("--disable-userns", "--size") if f in help_text)
        links = []
        for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(name):
                links.append((name, os.readlink(name)))
            elif os.path.isdir(name):
                links.append((name, ""))
        host.root_links = tuple(links)
        compiled = compile_filter()  # once per host; each stage reads it from host.seccomp_fd
        seccomp_note = compiled.note
        if compiled.bpf is not None:
            try:
                host.seccomp_fd = sealed_memfd(compiled.bpf)
            except OSError as exc:
                seccomp_note = f"the filter could not be kept in a memfd ({exc})"
    # Really start something once, the way every run will be started.
    true = resolve_binary(None, ["true"]) or "/usr/bin/true"
    outcome = run_sync(host, trial_stage([true]))
    if outcome.returncode != 0 and host.cgroups:
        host.cgroups = ()  # a hierarchy we may create in but not join: do without
        retry = run_sync(host, trial_stage([true]))
        if retry.returncode == 0:
            outcome = retry
    if outcome.returncode != 0 and host.seccomp_fd is not None:
        # bwrap could not apply the filter (a kernel without seccomp filters, say): run without it, and say so.
        refused, filter_fd, host.seccomp_fd = _failure(outcome), host.seccomp_fd, None
        retry = run_sync(host, trial_stage([true]))
        if retry.returncode == 0:
            outcome, seccomp_note = retry, f"bwrap could not apply the filter: {refused.splitlines()[0]}"
            os.close(filter_fd)
        else:
            host.seccomp_fd = filter_fd
    controllers = tuple(sorted({c for h in host.cgroups for c in h.controllers}))
    if outcome.returncode != 0:
        err = _failure(outcome)
        if mode == "bwrap" and ("namespace" in err or "not permitted" in err.lower() or "No permissions" in err):
            reason = f"user namespaces forbidden: {err}"
        else:
            reason = f"sandbox failed to start: {err}"
        host.status = SandboxStatus(False, mode, reason, per_run_uid=per_run_uid, cgroups=controllers)
        return host
    if mode == "unsafe-rlimits-only":
        reason = "namespaces disabled by configuration (unsafe-rlimits-only)"
        disk = "no mount namespace (unsafe-rlimits-only): runs write to a directory on the host's disk"
        host.status = SandboxStatus(
            False,
            mode,
            reason,
            usable=True,
            per_run_uid=per_run_uid,
            cgroups=controllers,
            seccomp_note=seccomp_note,
            disk_reason=disk,
        )
    else:
        host.run_fs, disk = _run_filesystem(host, true)
        host.status = SandboxStatus(
            True,
            mode,
            None,
            usable=True,
            per_run_uid=per_run_uid,
            cgroups=controllers,
            bwrap_version=version,
            seccomp=host.seccomp_fd is not None,
            seccomp_note=seccomp_note,
            disk_limited=host.run_fs is not None,
            disk_reason=disk,
        )
    return host


def _failure(outcome: Outcome) -> str:
    return outcome.start_error or decode(outcome.stderr).strip() or f"exit status {outcome.returncode}"


def _run_filesystem(host: Host, true: str) -> tuple[TmpfsMaker | None, str | None]:
    """The maker of each run's own filesystem, once one has carried a real sandbox here; else why not."""
    on_disk = "runs write to a directory on the host's disk"
    maker, reason = tmpfs_maker(default_python())
    if maker is None:
        return None, f"{reason}; {on_disk}"

    async def trial() -> Outcome:
        async with uid_slot(host.uids) as uid:
            workdir = make_workdir(host.work_root, "trial", "", uid, tmpfs=maker, size_bytes=1 << 20, inodes=16)
            try:
                stage = trial_stage([true])
                stage.workdir, stage.uid = workdir, uid
                return await run_stage(host, stage)
            finally:
                remove_workdir(workdir)

    try:
        outcome = in_fresh_loop(trial)
    except OSError as exc:
        return None, f"cannot make a run's own filesystem ({exc}); {on_disk}"
    if outcome.returncode != 0:
        err = outcome.start_error or decode(outcome.stderr).strip() or f"exit status {outcome.returncode}"
        return None, f"a run's own filesystem does not attach here ({err}); {on_disk}"
    return maker, None


def toolchains(config: SandboxConfig | None = None) -> dict[str, ToolchainStatus]:
    """Per language: available and its version, or why not; detected once (versions run sandboxed)."""
    config = config or SandboxConfig()
    found = _TOOLCHAIN_STATUS.get(config)
    if found is not None:
        return found
    host = host_for(config)
    with _STATE_LOCK:
        found = _TOOLCHAIN_STATUS.get(config)
        if found is None:
            found = _TOOLCHAIN_STATUS[config] = _detect_toolchains(host)
    return found


def _detect_toolchains(host: Host) -> dict[str, ToolchainStatus]:
    result: dict[str, ToolchainStatus] = {}
    todo: dict[str, Stage] = {}
    for lang in LANGUAGES:
        tc = host.toolchains.get(lang)
        if tc is None or tc.missing:
            result[lang] = ToolchainStatus(lang, False, reason=tc.missing if tc else "not probed")
        elif not host.status.usable:
            result[lang] = ToolchainStatus(lang, False, reason=f"sandbox unavailable: {host.status.reason}")
        else:
            role, args = REGISTRY[lang].VERSION_COMMAND
            todo[lang] = trial_stage([tc.binaries[role], *args], toolchain=tc, for_toolchain=True)

    async def run_all() -> list[Outcome]:
        return await asyncio.gather(*(run_stage_with_own_uid(host, st) for st in todo.values()))

    outcomes = in_fresh_loop(run_all) if todo else []
    for (lang, _st), out in zip(todo.items(), outcomes, strict=True):
        text = (decode(out.stdout) + decode(out.stderr)).strip()
        if out.returncode == 0 and text:
            result[lang] = ToolchainStatus(lang, True, version=text.splitlines()[0].strip())
        else:
            first = text.splitlines()[0] if text else f"exit status {out.returncode}"
            result[lang] = ToolchainStatus(lang, False, reason=f"does not run in the sandbox: {first}")
    if result["java"].available:
        host.javac_archive = javac_archive(host)
    return {lang: result[lang] for lang in LANGUAGES}


def run_sync(host: Host, stage: Stage) -> Outcome:
    return in_fresh_loop(lambda: run_stage_with_own_uid(host, stage))  # type: ignore[return-value]


def trial_stage(cmd: list[str], toolchain: Toolchain | None = None, for_toolchain: bool = False) -> Stage:
    """A stage for probes: `true` in an empty sandbox, or a toolchain's version command."""
    limits = Limits(timeout_s=30.0) if for_toolchain else Limits(timeout_s=10.0)
    return Stage(
        cmd=cmd,
        toolchain=toolchain,
        timeout_s=limits.timeout_s,
        limits=limits,
        memory_kind="managed" if for_toolchain else "native",
        memory_mb=2048 if for_toolchain else limits.memory_mb,
        nproc=128 if for_toolchain else 16,
        nofile=256,
        env={"MALLOC_ARENA_MAX": "2"},
        stdin=b"",
        workdir=None,
    )
