"""The sandbox's shape: bwrap's argv (namespaces, mounts, environment), rlimits, the child's set-up."""

from __future__ import annotations

import math
import os
import resource
from typing import TYPE_CHECKING

from execution.sandbox.host.uids import uid_task_count
from execution.sandbox.workdir import RUN_FS_LAYOUT

if TYPE_CHECKING:
    from execution.sandbox.host.setup import Host
    from execution.sandbox.process import Stage

MB = 1024 * 1024
BOX = "/box"  # the run directory as the program sees it
BWRAP_PROCS = 2  # outer bwrap + bwrap's init in the sandbox, counted by RLIMIT_NPROC
_RUNTIME_AS_SLACK_MB = 1536  # JVM / V8 virtual reservations beyond the heap (no memory cgroup)
_RUNTIME_AS_SLACK_CGROUP_MB = 4096  # the same when a memory cgroup bounds the resident total
_RUNTIME_RSS_SLACK_MB = 256  # JVM / V8 resident overhead beyond the heap (cgroup)
_NATIVE_RSS_SLACK_MB = 64  # cgroup backstop above RLIMIT_AS for Python / C++


def mb(n: float) -> int:
    return int(n * MB)


BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}


def cgroup_limits(stage: Stage) -> dict[str, int]:
    """The stage's cgroup limits: a backstop above its memory, and its processes."""
    slack = _RUNTIME_RSS_SLACK_MB if stage.memory_kind == "managed" else _NATIVE_RSS_SLACK_MB
    return {"memory_bytes": mb(stage.memory_mb + slack), "pids": stage.nproc + BWRAP_PROCS}


def cpu_limit(timeout_s: float) -> tuple[int, int]:
    """RLIMIT_CPU (soft, hard) for a wall time: SIGXCPU one second past it, SIGKILL one more later."""
    cpu = math.ceil(timeout_s) + 1
    return cpu, cpu + 1


def rlimits(stage: Stage, host: Host) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the child, never above what the server itself may use."""
    limits = stage.limits
    cpu_soft, cpu_hard = cpu_limit(stage.timeout_s)
    if stage.memory_kind == "managed":
        # Reservations (thread stacks, code cache, class space) are not memory; with a memory
        # cgroup bounding the resident total, the address space can be generous.
        has_memcg = any("memory" in h.controllers for h in host.cgroups)
        slack = _RUNTIME_AS_SLACK_CGROUP_MB if has_memcg else _RUNTIME_AS_SLACK_MB
        address_space = mb(stage.memory_mb + slack)
    else:
        address_space = mb(stage.memory_mb)
    nproc = stage.nproc + BWRAP_PROCS
    if host.uids is None:  # shared uid: count what it already runs
        nproc += uid_task_count(os.getuid())
    wanted = [
        (resource.RLIMIT_CPU, cpu_soft, cpu_hard),
        (resource.RLIMIT_AS, address_space, address_space),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_FSIZE, mb(limits.file_size_mb), mb(limits.file_size_mb)),
        (resource.RLIMIT_NOFILE, stage.nofile, stage.nofile),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    result = []
    for res, soft, hard in wanted:
        _cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        result.append((res, soft, hard))
    return result


def bwrap_argv(host: Host, stage: Stage, *, info_fd: int, seccomp_fd: int | None = None) -> list[str]:
    tmp_size = str(max(mb(stage.limits.disk_mb), 4096))  # tmpfs reads size 0 as "unlimited"
    sized = "--size" in host.bwrap_features
    argv = [host.bwrap or "bwrap", "--info-fd", str(info_fd)]
    if seccomp_fd is not None:  # bwrap reads the filter from it and applies it just before exec
        argv += ["--seccomp", str(seccomp_fd)]
    argv += ["--unshare-all", "--unshare-user"]
    if "--disable-userns" in host.bwrap_features:
        argv.append("--disable-userns")
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for name, target in host.root_links:
        argv += ["--symlink", target, name] if target else ["--ro-bind", name, name]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    tc = stage.toolchain
    if tc is not None:
        for d in tc.binds:
            argv += ["--ro-bind", d, d]
        for f in tc.bind_files:
            argv += ["--ro-bind-try", f, f]
        for d in tc.hide:
            argv += (["--size", "4096"] if sized else []) + ["--tmpfs", d, "--remount-ro", d]
    for src, dest in stage.extra_binds:
        argv += ["--ro-bind", src, dest]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    workdir = stage.workdir
    if workdir is not None and workdir.fs_fd is not None:
        # The child attached the run's own filesystem on workdir.path: every writable place is in it.
        for name, dest in RUN_FS_LAYOUT:
            argv += ["--bind", os.path.join(workdir.path, name), dest]
    else:
        argv += (["--size", tmp_size] if sized else []) + ["--tmpfs", "/tmp"]
        argv += (["--size", tmp_size] if sized else []) + ["--tmpfs", "/dev/shm"]
        if workdir is not None:
            argv += ["--bind", workdir.path, BOX]
    argv += ["--chdir", BOX if workdir is not None else "/tmp"]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--clearenv"]
    for key, value in {**BASE_ENV, **stage.env}.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *stage.cmd]
