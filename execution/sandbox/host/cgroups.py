"""Per-stage cgroups (optional): which hierarchies are writable, limits, joining, the OOM counter."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from execution.sandbox.host import read_text


@dataclass(frozen=True)
class CgroupHierarchy:
    base: str  # the server's own cgroup directory in this hierarchy
    controllers: tuple[str, ...]  # of "memory", "pids" handled here
    v2: bool


def writable_hierarchies() -> list[CgroupHierarchy]:
    """Writable hierarchies for per-run cgroups under the server's own cgroup, tested by a trial."""
    mounts: list[tuple[str, str, str, set[str]]] = []  # (fstype, root, mountpoint, options)
    for line in (read_text("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(lf) >= 5 and len(rf) >= 3 and rf[0] in ("cgroup", "cgroup2"):
            mounts.append((rf[0], lf[3], lf[4], set(rf[2].split(","))))
    found: list[CgroupHierarchy] = []
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0" and not ctrls:
            for fstype, root, mnt, _opts in mounts:
                if fstype == "cgroup2":
                    base = os.path.normpath(os.path.join(mnt, os.path.relpath(path, root)))
                    have = set((read_text(os.path.join(base, "cgroup.subtree_control")) or "").split())
                    wanted = tuple(c for c in ("memory", "pids") if c in have)
                    if wanted:
                        found.append(CgroupHierarchy(base.rstrip("/"), wanted, True))
                    break
            continue
        wanted = tuple(c for c in ("memory", "pids") if c in ctrls.split(","))
        if not wanted:
            continue
        for fstype, root, mnt, opts in mounts:
            if fstype == "cgroup" and set(wanted) <= opts:
                base = os.path.normpath(os.path.join(mnt, os.path.relpath(path, root)))
                found.append(CgroupHierarchy(base, wanted, False))
                break
    usable = []
    for h in found:
        trial = os.path.join(h.base, f"interview-exec-probe-{os.getpid()}")
        try:
            os.mkdir(trial)
            try:
                write_limits(trial, h, memory_bytes=64 * 1024 * 1024, pids=8)
            finally:
                os.rmdir(trial)
            usable.append(h)
        except OSError:
            continue
    return usable


def write_limits(path: str, h: CgroupHierarchy, *, memory_bytes: int, pids: int) -> None:
    def put(name: str, value: str, required: bool = True) -> None:
        target = os.path.join(path, name)
        if not required and not os.path.exists(target):
            return
        with open(target, "w") as f:
            f.write(value)

    if "memory" in h.controllers:
        if h.v2:
            put("memory.max", str(memory_bytes))
            put("memory.swap.max", "0", required=False)
        else:
            put("memory.limit_in_bytes", str(memory_bytes))
            put("memory.memsw.limit_in_bytes", str(memory_bytes), required=False)
    if "pids" in h.controllers:
        put("pids.max", str(pids))


_CGROUP_SEQ = iter(range(1, 1 << 62))


class StageCgroup:
    """The per-stage cgroup(s): created with limits, joined by the child, read and removed after."""

    def __init__(self, hierarchies: Sequence[CgroupHierarchy], *, memory_bytes: int, pids: int) -> None:
        self.paths: list[str] = []
        self.procs_fds: list[int] = []
        self._memory: tuple[str, bool] | None = None
        name = f"interview-exec-{os.getpid()}-{next(_CGROUP_SEQ)}"
        try:
            for h in hierarchies:
                path = os.path.join(h.base, name)
                os.mkdir(path)
                self.paths.append(path)
                write_limits(path, h, memory_bytes=memory_bytes, pids=pids)
                self.procs_fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
                if "memory" in h.controllers:
                    self._memory = (path, h.v2)
        except OSError:
            self.close()
            raise

    def oom_killed(self) -> bool:
        if self._memory is None:
            return False
        path, v2 = self._memory
        text = read_text(os.path.join(path, "memory.events" if v2 else "memory.oom_control")) or ""
        m = re.search(r"^oom_kill (\d+)", text, re.M)
        return bool(m and int(m.group(1)) > 0)

    def close(self) -> None:
        for fd in self.procs_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.procs_fds = []
        for path in reversed(self.paths):
            for _ in range(20):  # every task is gone by now; this is only a safety net
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
        self.paths = []
