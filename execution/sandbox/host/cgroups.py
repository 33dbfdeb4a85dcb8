"""Per-stage cgroups (optional): which hierarchies are writable, limits, joining, the OOM counter."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from execution.sandbox.host import read_text

CONTROLLERS = ("memory", "pids")
# v2: the leaf the server moves itself into, so that its own cgroup may enable controllers for
# the runs' cgroups beside it (the no-internal-processes rule).
SERVER_LEAF = "interview-exec-server"


class CgroupFS:
    """Every file operation of this module on /proc and the cgroup file systems.

    The host's own by default. Tests hand in a fake tree in a temporary directory through a
    subclass that does what a plain directory cannot and the kernel does: mkdir makes the
    control files, rmdir removes them, a pid written into cgroup.procs moves that process.
    """

    def __init__(self, proc_self: str = "/proc/self") -> None:
        self.proc_self = proc_self  # where mountinfo and cgroup are read

    def read(self, path: str) -> str | None:
        return read_text(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def write(self, path: str, value: str) -> None:
        with open(path, "w") as f:
            f.write(value)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)


HOST_FS = CgroupFS()


@dataclass(frozen=True)
class CgroupHierarchy:
    base: str  # the directory the per-run cgroups are made in (the server's own cgroup, or its parent on v2)
    controllers: tuple[str, ...]  # of "memory", "pids" handled here
    v2: bool
    fs: CgroupFS = field(default=HOST_FS, compare=False, repr=False)


@dataclass(frozen=True)
class _Mount:
    fstype: str  # "cgroup" (v1) or "cgroup2"
    root: str  # the cgroup shown at the mount point (not "/" for a container's bind mount)
    point: str
    options: frozenset[str]  # v1: the controllers among the super options


def _unescape(field_text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def _cgroup_mounts(mountinfo: str) -> list[_Mount]:
    mounts = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(lf) >= 5 and len(rf) >= 3 and rf[0] in ("cgroup", "cgroup2"):
            mounts.append(_Mount(rf[0], _unescape(lf[3]), _unescape(lf[4]), frozenset(rf[2].split(","))))
    return mounts


def _directory(mount: _Mount, path: str, *, leave_leaf: bool = False) -> str | None:
    """The directory of cgroup `path` under this mount; None when the mount does not show it."""
    rel = os.path.relpath(path, mount.root)
    if rel == ".." or rel.startswith("../"):
        return None
    if leave_leaf and rel != "." and os.path.basename(rel) == SERVER_LEAF:
        rel = os.path.dirname(rel) or "."  # a process started in the server's leaf: runs go beside it
    return os.path.normpath(os.path.join(mount.point, rel))


def writable_hierarchies(fs: CgroupFS = HOST_FS) -> list[CgroupHierarchy]:
    """Writable hierarchies for per-run cgroups under the server's own cgroup, tested by a trial.

    On v2 this may move the server into ``<its cgroup>/interview-exec-server`` and enable
    memory and pids for its cgroup's children (see `_v2_hierarchy`).
    """
    mounts = _cgroup_mounts(fs.read(os.path.join(fs.proc_self, "mountinfo")) or "")
    found: list[CgroupHierarchy] = []
    for line in (fs.read(os.path.join(fs.proc_self, "cgroup")) or "").splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0" and not ctrls:
            for mount in mounts:
                base = _directory(mount, path, leave_leaf=True) if mount.fstype == "cgroup2" else None
                if base is not None:
                    with contextlib.suppress(OSError):
                        h = _v2_hierarchy(fs, base)
                        if h is not None:
                            found.append(h)
                    break
            continue
        wanted = tuple(c for c in CONTROLLERS if c in ctrls.split(","))
        if not wanted:
            continue
        for mount in mounts:
            base = _directory(mount, path) if mount.fstype == "cgroup" and set(wanted) <= mount.options else None
            if base is not None:
                found.append(CgroupHierarchy(base, wanted, False, fs))
                break
    usable = []
    for h in found:
        trial = os.path.join(h.base, f"interview-exec-probe-{os.getpid()}")
        try:
            fs.mkdir(trial)
            try:
                write_limits(trial, h, memory_bytes=64 * 1024 * 1024, pids=8)
            finally:
                fs.rmdir(trial)
            usable.append(h)
        except OSError:
            continue
    return usable


def _v2_hierarchy(fs: CgroupFS, base: str) -> CgroupHierarchy | None:
    """The v2 cgroup to make per-run cgroups in, with memory and pids enabled for its children.

    A v2 controller works in a cgroup only when its parent lists it in ``cgroup.subtree_control``,
    and a cgroup other than the root may not both hold processes and enable controllers there.
    A delegated cgroup (systemd's ``Delegate=``) starts with the server in it and nothing
    enabled; so, when the server is the only process in it, the server moves itself into the
    leaf ``<base>/interview-exec-server`` and enables ``+memory +pids`` in ``<base>``. Other
    processes in the cgroup are not ours to move: then v2 cgroups are not used. The root
    cgroup may hold processes and children alike; there, what the system enabled is used as is.
    """
    controllers = set((fs.read(os.path.join(base, "cgroup.controllers")) or "").split())
    enabled = set((fs.read(os.path.join(base, "cgroup.subtree_control")) or "").split())
    if not fs.exists(os.path.join(base, "cgroup.type")):  # only the root cgroup lacks it
        wanted = tuple(c for c in CONTROLLERS if c in enabled)
        return CgroupHierarchy(base, wanted, True, fs) if wanted else None
    wanted = tuple(c for c in CONTROLLERS if c in controllers)
    if not wanted:
        return None
    missing = [c for c in wanted if c not in enabled]
    if missing:
        members = (fs.read(os.path.join(base, "cgroup.procs")) or "").split()
        if members == [str(os.getpid())]:
            leaf = os.path.join(base, SERVER_LEAF)
            with contextlib.suppress(FileExistsError):
                fs.mkdir(leaf)
            fs.write(os.path.join(leaf, "cgroup.procs"), "0")
        elif members:
            return None
        fs.write(os.path.join(base, "cgroup.subtree_control"), " ".join(f"+{c}" for c in missing))
    return CgroupHierarchy(base, wanted, True, fs)


def write_limits(path: str, h: CgroupHierarchy, *, memory_bytes: int, pids: int) -> None:
    def put(name: str, value: str, required: bool = True) -> None:
        target = os.path.join(path, name)
        if not required and not h.fs.exists(target):
            return
        h.fs.write(target, value)

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
        self._made: list[tuple[CgroupFS, str]] = []
        self._memory: tuple[CgroupHierarchy, str] | None = None
        name = f"interview-exec-{os.getpid()}-{next(_CGROUP_SEQ)}"
        try:
            for h in hierarchies:
                path = os.path.join(h.base, name)
                h.fs.mkdir(path)
                self.paths.append(path)
                self._made.append((h.fs, path))
                write_limits(path, h, memory_bytes=memory_bytes, pids=pids)
                self.procs_fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
                if "memory" in h.controllers:
                    self._memory = (h, path)
        except OSError:
            self.close()
            raise

    def oom_killed(self) -> bool:
        if self._memory is None:
            return False
        h, path = self._memory
        text = h.fs.read(os.path.join(path, "memory.events" if h.v2 else "memory.oom_control")) or ""
        m = re.search(r"^oom_kill (\d+)", text, re.M)
        return bool(m and int(m.group(1)) > 0)

    def close(self) -> None:
        for fd in self.procs_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.procs_fds = []
        for fs, path in reversed(self._made):
            for _ in range(20):  # every task is gone by now; this is only a safety net
                try:
                    fs.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
        self._made = []
        self.paths = []
