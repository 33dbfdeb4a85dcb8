"""The sandbox's shape: bwrap's argv (namespaces, mounts, environment), rlimits, the child's set-up."""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

from execution.sandbox.host import mountns
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


def rlimits(stage: Stage, host: Host) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the child, never above what the server itself may use."""
    limits = stage.limits
    cpu = math.ceil(stage.timeout_s) + 1
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
        (resource.RLIMIT_CPU, cpu, cpu + 1),
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


def make_preexec(
    *,
    mntns_fd: int | None,
    rlimits: list[tuple[int, int, int]],
    cgroup_fds: list[int],
    uid: int | None,
    cwd: str | None,
    attach: Callable[[], None] | None = None,
) -> Callable[[], None]:
    """Runs in the forked child before exec: join cgroups, setns, attach the run's filesystem,
    drop to the run's uid, rlimits.

    Only calls that take no lock another thread could hold (no imports, no logging).
    """
    setns, setrlimit, write, chdir = mountns.setns, resource.setrlimit, os.write, os.chdir
    setgroups, setresgid, setresuid = os.setgroups, os.setresgid, os.setresuid
    zero, no_groups = b"0", ()
    pairs = [(res, (soft, hard)) for res, soft, hard in rlimits]  # built before the fork

    def preexec() -> None:
        for fd in cgroup_fds:
            write(fd, zero)
        if mntns_fd is not None:
            if setns(mntns_fd, mountns.CLONE_NEWNS) != 0:
                raise OSError("setns into the toolchain mount namespace failed")
            if cwd is not None:
                chdir(cwd)  # setns moved us to the namespace's root
        if attach is not None:  # before the uid drop: needs CAP_SYS_ADMIN (in the helper's userns if not root)
            attach()
        if uid is not None:
            setgroups(no_groups)
            setresgid(uid, uid, uid)
            setresuid(uid, uid, uid)
        for res, pair in pairs:  # last: RLIMIT_AS may be below this forked copy's own size
            setrlimit(res, pair)

    return preexec


def bwrap_argv(host: Host, stage: Stage, *, info_fd: int) -> list[str]:
    tmp_size = str(max(mb(stage.limits.disk_mb), 4096))  # tmpfs reads size 0 as "unlimited"
    sized = "--size" in host.bwrap_features
    argv = [host.bwrap or "bwrap", "--info-fd", str(info_fd), "--unshare-all", "--unshare-user"]
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
