"""Runs untrusted candidate code in a sandbox: a pure module (standard library only, asyncio).

How a run is contained
======================

Every run gets a fresh directory (``mkdtemp`` under ``SandboxConfig.work_root``), an
unprivileged uid of its own, and one or two sandboxed processes (compile, then run).

* **Namespaces (bubblewrap).** ``bwrap --unshare-all --unshare-user --disable-userns``
  gives each stage new user, mount, pid, network, ipc, uts and cgroup namespaces.
  The root is an empty tmpfs made read-only after setup; it holds a read-only ``/usr``
  (plus the ``/bin``, ``/lib*`` links of a merged-usr system), ``/etc/ld.so.cache``,
  the toolchain's own directories (the Python prefix, the JDK and its ``/etc/java-*``
  files) and nothing else: no ``/root``, ``/home``, ``/work``, ``/var``, no project
  files, no database. ``/proc`` is a new procfs of the sandbox's pid namespace, ``/dev``
  a minimal devtmpfs copy (read-only), ``/tmp`` and ``/dev/shm`` are size-limited
  tmpfs that vanish with the sandbox, and the run directory is bound read-write on
  ``/box`` (the working directory). The Python prefix's ``site-packages`` is covered
  by an empty read-only tmpfs. The environment is cleared to a fixed ``PATH``,
  ``HOME=/tmp``, ``LANG=C.UTF-8`` (plus ``MALLOC_ARENA_MAX`` for the JVM and V8); bwrap
  itself is started with just ``PATH``, so even ``/proc/1/environ`` (bwrap's init)
  holds no server secret. ``--die-with-parent`` and ``--new-session`` are always on.
  There is no network interface but a private loopback. Neither bwrap's init nor the
  program has any capability (``CapBnd`` 0, ``NoNewPrivs``), and the sandbox cannot
  create further user namespaces.

* **An unprivileged uid per run.** When the server runs as root, each run takes a
  dedicated uid/gid from ``uid_base .. uid_base+uid_count-1`` (default 60000..60255,
  checked to be unused by real accounts). A slot is held by binding the abstract unix
  socket ``@interview-exec-uid-<uid>``: that works across several server processes,
  is released by the kernel if a process dies, and the sandboxes (own network
  namespace) cannot touch it. The child process drops to that uid *before* it execs
  bwrap (``setgroups([])``, ``setresgid``, ``setresuid`` in ``preexec_fn``), so
  bwrap runs unprivileged and builds an unprivileged user namespace in which the
  program's uid maps to the per-run uid outside, never to 0. Because root is exempt from
  ``RLIMIT_NPROC`` and an unprivileged uid is not, and because no one else uses that uid,
  the process limit counts exactly this run's processes and threads. When the server
  is not root, runs keep the server's uid (and ``RLIMIT_NPROC`` is set to the uid's
  current task count plus the limit: weaker, documented).

* **Toolchains under a root-only directory.** The server's Python lives under
  ``/root`` (mode 0700), which the per-run uid cannot traverse, and bwrap 0.8 calls
  ``realpath`` on every bind source, even for ``--ro-bind-fd`` (it resolves
  ``/proc/self/fd/N`` back to ``/root/...`` and fails with EACCES). So, once at start-up,
  a short-lived root helper creates a *private mount namespace* (a slave of the host's,
  so later host mounts still propagate in) in which ``/root`` is a small tmpfs holding
  only read-only bind mounts of the toolchain directories that need it. The server
  keeps a file descriptor to that namespace; each sandbox child calls ``setns`` into it
  (still root, in ``preexec_fn``) just before dropping to its uid and exec'ing bwrap,
  which can then bind those paths by name. The server's own view is never changed,
  nothing is mounted on the host, and the namespace disappears with the server process.

* **Resource limits** (``setrlimit`` in the child before exec; inherited by bwrap and
  the program): ``RLIMIT_CPU`` = ceil(timeout)+1 s (SIGXCPU, SIGKILL one second later),
  ``RLIMIT_AS`` (memory, per language, see below), ``RLIMIT_NPROC`` = max_processes
  + 2 (bwrap's two processes), ``RLIMIT_FSIZE`` = file_size_mb, ``RLIMIT_NOFILE`` =
  open_files, ``RLIMIT_CORE`` = 0. Where cgroups are writable (v1 ``memory`` / ``pids``
  or a delegated v2 subtree), each stage also gets its own cgroup with a memory limit
  (``memory.limit_in_bytes``/``memory.max``, swap off) and ``pids.max``; the child joins
  it before exec, and its ``oom_kill`` counter tells an OOM kill apart from other kills.
  Without cgroups everything still works on rlimits alone.

* **Memory per language.** ``memory_mb`` bounds what the program itself can use:
  Python and C++ get ``RLIMIT_AS = memory_mb`` (an allocation past it fails:
  ``MemoryError``, ``std::bad_alloc``) and a cgroup backstop of ``memory_mb + 64``. The
  JVM gets ``-Xmx<memory_mb>m`` and V8 ``--max-old-space-size=<memory_mb>``; both reserve
  large virtual ranges (thread stacks, code cache, class space) that are not memory, so
  with a memory cgroup their resident total is capped at ``memory_mb + 256`` and their
  ``RLIMIT_AS`` is a loose ``memory_mb + 4096``; without one, ``RLIMIT_AS`` is
  ``memory_mb + 1536`` (and Java threads get 16 MB stacks instead of 32 MB) with
  ``MALLOC_ARENA_MAX=2`` and small code-cache/class-space reservations. A memory limit is
  reported from the cgroup's ``oom_kill`` counter or the runtime's own message
  (``MemoryError``, ``std::bad_alloc``, ``OutOfMemoryError``, V8's heap-limit report).
  ``/tmp`` and ``/dev/shm`` are ``tmpfs_mb`` each. Compile stages use
  ``compile_memory_mb`` the same way.

* **Wall time, output, and "everything is gone".** A stage is killed when its wall time
  passes (``Time limit exceeded (5 s)``) or when stdout+stderr together pass
  ``output_bytes`` (the output is read incrementally from the pipes and cut at the cap;
  ``truncated`` is true). bwrap's ``--info-fd`` reports the host pid of the sandbox's
  pid 1 (bwrap's init) and the runner holds a pidfd on it. To kill, it sends SIGKILL to
  that pidfd: the kernel then kills every process in the pid namespace, however
  detached (``setsid``, double fork). A pid namespace's init only becomes a zombie once
  every other process of the namespace is gone, so the runner answers only after that
  pidfd reports the exit (for a normal exit too: bwrap's init exits when the program
  does, taking the namespace down). bwrap's outer process exits *without reaping* its
  init, so the server makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``) and
  reaps the orphaned init itself (otherwise, under an init that never reaps, zombies
  would pile up and keep counting against the uid's ``RLIMIT_NPROC``). Process exits are
  watched with pidfds, not ``Process.wait()``, which in Python 3.11 also waits for the
  pipes to close. If pid 1 cannot be found, the runner kills the outer bwrap's process
  group and, as root, runs ``kill -9 -1`` as the run's uid. A uid that still owns a live
  process (a crashed server's leftover) is never handed out. The run directory is then
  removed with ``shutil.rmtree`` (fd-based, never follows a symlink).

* **Files without following links.** The run directory is created by ``mkdtemp``
  (mode 0700), opened with ``O_DIRECTORY|O_NOFOLLOW``; the source is written with
  ``os.open(name, O_CREAT|O_EXCL|O_NOFOLLOW, dir_fd=...)`` and the directory is handed
  to the run's uid with ``fchown`` on the descriptor. Nothing on the host ever opens a
  path inside it afterwards except the fd-based ``rmtree``, and by then every process
  of the run is dead.

``mode="unsafe-rlimits-only"`` is an operator's explicit weaker choice: no namespaces
(the program sees the host's files and network), but the same per-run uid, rlimits,
cgroups, wall time, output cap, a minimal environment, and after every run a kill of the
process group plus (root only) a ``kill -9 -1`` sweep as the run's uid and the reaping of
its orphans.

Side effects on the server process: it becomes a child subreaper (set once by the probe)
and keeps one mount-namespace file descriptor when a toolchain lives under a root-only
directory. Nothing else about the server changes.

Result conventions
==================

``exit_code`` is the program's exit status, ``128 + N`` when signal ``N`` killed it (as a
shell reports it: bwrap flattens the wait status that way, so ``exit(139)`` and SIGSEGV
look alike), and ``None`` when the program did not end on its own (time or output limit,
compile error, unavailable). ``execution_time_ms`` is the wall time of the whole call, end
to end: directory set-up, compile stage if any, run stage (not the final clean-up).
``output_bytes`` caps stdout and stderr *together*, per stage. A compile stage's failure
(errors, its own time or memory limit) is ``compile_error``; its output on success is not
shown.

Per language: Python runs as ``python -I -B -u main.py`` on the server's own base
interpreter (isolated mode, no bytecode writes, unbuffered so that output printed before a
crash or a timeout is kept; not ``-S``, which would drop ``exit()`` for ~1 ms). JavaScript
runs as ``node --max-old-space-size=<memory_mb> main.js``. C++ is compiled with
``g++ -std=gnu++17 -O2 -pipe`` and run as ``./main``. Java: the file is named after the
public top-level class (``Main`` if none), compiled with ``javac`` and run with
``java -Xshare:auto -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Xmx...
-Xss32m`` (the class declaring ``main``, package-qualified). javac starts from a dynamic
AppCDS archive dumped once inside the sandbox and then copied into a root-owned read-only
file in ``<work_root>/exec-cache-<JDK key>/`` (kept and reused by later server processes;
bwrap mode only): about 0.2 s saved per Java run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import grp
import hashlib
import math
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LANGUAGES = ("python", "javascript", "java", "cpp")

STATUSES = ("ok", "runtime_error", "compile_error", "timeout", "memory_limit", "output_limit", "unavailable")

_MB = 1024 * 1024
_BOX = "/box"  # the run directory as the program sees it
_JAVAC_ARCHIVE_IN_SANDBOX = "/cds/javac.jsa"
_RUNTIME_AS_SLACK_MB = 1536  # JVM / V8 virtual reservations beyond the heap (no memory cgroup)
_RUNTIME_AS_SLACK_CGROUP_MB = 4096  # the same when a memory cgroup bounds the resident total
_RUNTIME_RSS_SLACK_MB = 256  # JVM / V8 resident overhead beyond the heap (cgroup)
_NATIVE_RSS_SLACK_MB = 64  # cgroup backstop above RLIMIT_AS for Python / C++
_BWRAP_PROCS = 2  # outer bwrap + bwrap's init in the sandbox, counted by RLIMIT_NPROC
_KILL_GRACE_S = 5.0
_CLONE_NEWNS = 0x00020000


def _default_python() -> str:
    """The base interpreter (not a venv's wrapper), resolved to its real file."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@dataclass(frozen=True)
class Limits:
    """Per-run limits; all configurable by the caller (from settings)."""

    timeout_s: float = 5.0  # wall time of the run stage
    compile_timeout_s: float = 15.0  # wall time of a compile stage (g++ / javac)
    memory_mb: int = 256  # the program's memory (see the module docstring per language)
    max_processes: int = 64  # processes + threads of the program
    output_bytes: int = 1_000_000  # stdout + stderr together, per stage
    file_size_mb: int = 16  # largest file the program may write
    open_files: int = 64
    compile_memory_mb: int = 1024  # memory of a compile stage
    tmpfs_mb: int = 64  # size of the sandbox's /tmp and of its /dev/shm


@dataclass(frozen=True)
class SandboxConfig:
    """How to sandbox: from settings, fixed for the life of the process."""

    mode: str = "bwrap"  # "bwrap" or "unsafe-rlimits-only" (no namespaces: explicit opt-in)
    bwrap_path: str = "bwrap"
    python_path: str = field(default_factory=_default_python)
    node_path: str | None = None  # None: look up on PATH
    gxx_path: str | None = None
    javac_path: str | None = None
    java_path: str | None = None
    work_root: str | None = None  # parent of the per-run directories; None: tempfile.gettempdir()
    uid_base: int = 60000  # first uid/gid of the per-run range (used only when running as root)
    uid_count: int = 256
    cgroups: bool = True  # use per-run cgroups where the hierarchy is writable


@dataclass(frozen=True)
class ExecutionResult:
    success: bool
    stdout: str
    stderr: str
    exit_code: int | None
    execution_time_ms: int
    error: str | None
    status: str  # one of STATUSES
    truncated: bool = False

    def as_dict(self) -> dict:
        """The contract's JSON shape (camelCase)."""
        return {
            "success": self.success,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exitCode": self.exit_code,
            "executionTime": self.execution_time_ms,
            "error": self.error,
            "status": self.status,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class SandboxStatus:
    isolated: bool  # namespaces usable (mode "bwrap" and the trial sandbox ran)
    mode: str
    reason: str | None  # why not isolated / not usable; None when all is well
    usable: bool = False  # run_code will run programs (isolated, or the explicit weaker mode)
    per_run_uid: bool = False  # programs run as a dedicated unprivileged uid per run
    cgroups: tuple[str, ...] = ()  # controllers used per run, e.g. ("memory", "pids")
    bwrap_version: str | None = None

    def as_dict(self) -> dict:
        return {
            "isolated": self.isolated,
            "usable": self.usable,
            "mode": self.mode,
            "reason": self.reason,
            "perRunUid": self.per_run_uid,
            "cgroups": list(self.cgroups),
            "bwrapVersion": self.bwrap_version,
        }


@dataclass(frozen=True)
class ToolchainStatus:
    language: str
    available: bool
    version: str | None = None
    reason: str | None = None  # why unavailable

    def as_dict(self) -> dict:
        return {"language": self.language, "available": self.available, "version": self.version, "reason": self.reason}


class QueueFull(Exception):
    """Raised by ExecutionPool.run when every slot is busy and the queue is full."""


class ExecutionPool:
    """Bounds concurrent runs (max_concurrent) and waiting runs (max_queue); the rest get QueueFull.

    Loop-agnostic: waiters are futures of the loop that awaits them, so one pool may serve
    one event loop at a time (the ASGI server's), and tests may create their own.
    """

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def run(self, **kwargs) -> ExecutionResult:
        """run_code(**kwargs) once a slot is free; QueueFull at once if the queue is full."""
        await self._acquire()
        try:
            return await run_code(**kwargs)
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(f"{self._active} runs active and {len(self._waiters)} queued")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _release handed its slot over (active count unchanged)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed to us just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1


# --------------------------------------------------------------------------------------
# Small helpers


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _mb(n: float) -> int:
    return int(n * _MB)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _path_is_under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _first_blocking_ancestor(path: str) -> str | None:
    """The topmost directory on the way to `path` that others may not traverse, if any."""
    parts = os.path.realpath(path).split("/")[1:]
    current = ""
    for part in parts:
        current += "/" + part
        try:
            st = os.stat(current)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return current
    return None


def _uid_task_count(uid: int) -> int:
    """Tasks (threads) owned by uid: what RLIMIT_NPROC counts."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        text = _read_text(f"/proc/{entry}/status") or ""
        m_uid = re.search(r"^Uid:\s+(\d+)", text, re.M)
        m_thr = re.search(r"^Threads:\s+(\d+)", text, re.M)
        if m_uid and m_thr and int(m_uid.group(1)) == uid:
            total += int(m_thr.group(1))
    return total


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


_LIBC = ctypes.CDLL(None, use_errno=True)
_SETNS = _LIBC.setns
_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    """Orphans of our descendants (bwrap's sandbox init) are re-parented to us, so we can reap them."""
    return _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


# --------------------------------------------------------------------------------------
# Per-run uids


class _UidSlots:
    """Exclusive per-run uids; an abstract unix socket per uid makes them exclusive across processes."""

    def __init__(self, uids: Sequence[int]) -> None:
        self._uids = list(uids)
        self._held: dict[int, socket.socket] = {}
        self._next = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> int | None:
        with self._lock:
            n = len(self._uids)
            for i in range(n):
                uid = self._uids[(self._next + i) % n]
                if uid in self._held:
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    sock.bind(f"\0interview-exec-uid-{uid}")
                except OSError:
                    sock.close()
                    continue
                if _uid_has_processes(uid):  # left over by a crashed server: not a clean slot
                    sock.close()
                    continue
                self._held[uid] = sock
                self._next = (self._next + i + 1) % n
                return uid
            return None

    def release(self, uid: int) -> None:
        with self._lock:
            sock = self._held.pop(uid, None)
        if sock is not None:
            sock.close()


def _free_uid_range(base: int, count: int) -> list[int]:
    """uids (== gids) in the range that no account or group uses."""
    free = []
    for uid in range(base, base + count):
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            free.append(uid)
    return free


# --------------------------------------------------------------------------------------
# Cgroups (optional)


@dataclass(frozen=True)
class _CgroupHierarchy:
    base: str  # the server's own cgroup directory in this hierarchy
    controllers: tuple[str, ...]  # of "memory", "pids" handled here
    v2: bool


def _cgroup_hierarchies() -> list[_CgroupHierarchy]:
    """Writable hierarchies for per-run cgroups under the server's own cgroup, tested by a trial."""
    mounts: list[tuple[str, str, str, set[str]]] = []  # (fstype, root, mountpoint, options)
    for line in (_read_text("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(lf) >= 5 and len(rf) >= 3 and rf[0] in ("cgroup", "cgroup2"):
            mounts.append((rf[0], lf[3], lf[4], set(rf[2].split(","))))
    found: list[_CgroupHierarchy] = []
    for line in (_read_text("/proc/self/cgroup") or "").splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0" and not ctrls:
            for fstype, root, mnt, _opts in mounts:
                if fstype == "cgroup2":
                    base = os.path.normpath(os.path.join(mnt, os.path.relpath(path, root)))
                    have = set((_read_text(os.path.join(base, "cgroup.subtree_control")) or "").split())
                    wanted = tuple(c for c in ("memory", "pids") if c in have)
                    if wanted:
                        found.append(_CgroupHierarchy(base.rstrip("/"), wanted, True))
                    break
            continue
        wanted = tuple(c for c in ("memory", "pids") if c in ctrls.split(","))
        if not wanted:
            continue
        for fstype, root, mnt, opts in mounts:
            if fstype == "cgroup" and set(wanted) <= opts:
                base = os.path.normpath(os.path.join(mnt, os.path.relpath(path, root)))
                found.append(_CgroupHierarchy(base, wanted, False))
                break
    usable = []
    for h in found:
        trial = os.path.join(h.base, f"interview-exec-probe-{os.getpid()}")
        try:
            os.mkdir(trial)
            try:
                _write_cgroup_limits(trial, h, memory_bytes=64 * _MB, pids=8)
            finally:
                os.rmdir(trial)
            usable.append(h)
        except OSError:
            continue
    return usable


def _write_cgroup_limits(path: str, h: _CgroupHierarchy, *, memory_bytes: int, pids: int) -> None:
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


class _RunCgroup:
    """The per-stage cgroup(s): created with limits, joined by the child, read and removed after."""

    def __init__(self, hierarchies: Sequence[_CgroupHierarchy], *, memory_bytes: int, pids: int) -> None:
        self.paths: list[str] = []
        self.procs_fds: list[int] = []
        self._memory: tuple[str, bool] | None = None
        name = f"interview-exec-{os.getpid()}-{next(_CGROUP_SEQ)}"
        try:
            for h in hierarchies:
                path = os.path.join(h.base, name)
                os.mkdir(path)
                self.paths.append(path)
                _write_cgroup_limits(path, h, memory_bytes=memory_bytes, pids=pids)
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
        text = _read_text(os.path.join(path, "memory.events" if v2 else "memory.oom_control")) or ""
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


# --------------------------------------------------------------------------------------
# The private mount namespace that makes root-only toolchain directories bindable

_HOSTVIEW_HELPER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result != 0:
        sys.stderr.write(what + ": " + os.strerror(ctypes.get_errno()) + "\n")
        sys.exit(1)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 1, 32, 4096, 16384, 1 << 19
MS_NOSUID, MS_NODEV = 2, 4
check(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "make / rslave")
count = int(sys.argv[1])
dirs = [(os.open(d, os.O_PATH | os.O_DIRECTORY), d) for d in sys.argv[2 : 2 + count]]
for top in sys.argv[2 + count :]:
    check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k"), "tmpfs " + top)
for fd, d in dirs:
    os.makedirs(d, mode=0o755, exist_ok=True)
    check(libc.mount(("/proc/self/fd/%d" % fd).encode(), d.encode(), None, MS_BIND | MS_REC, None), "bind " + d)
    check(libc.mount(None, d.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None), "ro " + d)
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""


_HOSTVIEWS: dict[tuple[str, ...], int] = {}


def _hostview(dirs: tuple[str, ...]) -> tuple[int | None, str | None]:
    """One namespace per set of directories for the life of the process (configs may share it)."""
    if dirs not in _HOSTVIEWS:
        fd, err = _make_hostview(dirs, _default_python())
        if fd is None:
            return None, err
        _HOSTVIEWS[dirs] = fd
    return _HOSTVIEWS[dirs], None


def _make_hostview(dirs: Sequence[str], python: str) -> tuple[int | None, str | None]:
    """A mount-namespace fd in which `dirs` are reachable by anyone (see module docstring)."""
    tops = sorted({t for d in dirs if (t := _first_blocking_ancestor(d))})
    if not tops:
        return None, None
    helper = subprocess.Popen(
        [python, "-I", "-S", "-c", _HOSTVIEW_HELPER, str(len(dirs)), *dirs, *tops],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        line = helper.stdout.readline() if helper.stdout else b""
        if line != b"ready\n":
            helper.wait(timeout=10)
            err = helper.stderr.read().decode(errors="replace").strip() if helper.stderr else ""
            return None, f"cannot expose {', '.join(dirs)} to the sandbox uid: {err or 'helper failed'}"
        fd = os.open(f"/proc/{helper.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        return fd, None
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot expose {', '.join(dirs)} to the sandbox uid: {exc}"
    finally:
        with contextlib.suppress(OSError):
            helper.stdin.close()  # type: ignore[union-attr]
        try:
            helper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        for stream in (helper.stdout, helper.stderr):
            if stream:
                stream.close()


# --------------------------------------------------------------------------------------
# Toolchains: where they are and what each needs inside the sandbox


@dataclass(frozen=True)
class _Toolchain:
    language: str
    binaries: dict[str, str]  # role -> real path ("python", "node", "gxx", "javac", "java")
    binds: tuple[str, ...] = ()  # extra read-only directories (same path inside)
    bind_files: tuple[str, ...] = ()  # extra read-only files
    hide: tuple[str, ...] = ()  # directories covered by an empty read-only tmpfs
    missing: str | None = None  # why unavailable


_ALWAYS_BOUND = ("/usr",)


def _resolve(path: str | None, names: Sequence[str]) -> str | None:
    candidates = [path] if path else [shutil.which(n) for n in names]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.realpath(c)
    return None


def _prefix_binds(binary: str) -> tuple[str, ...]:
    """The install prefix of a binary outside /usr (its bin/'s parent)."""
    if _path_is_under(binary, _ALWAYS_BOUND):
        return ()
    return (os.path.dirname(os.path.dirname(binary)),)


def _python_toolchain(config: SandboxConfig) -> _Toolchain:
    py = _resolve(config.python_path, ["python3"])
    if py is None:
        return _Toolchain("python", {}, missing=f"Python interpreter not found ({config.python_path})")
    try:
        out = subprocess.run(
            [
                py,
                "-I",
                "-S",
                "-c",
                "import sys, sysconfig; p = sysconfig.get_paths()\n"
                "print(sys.prefix); print(sys.exec_prefix); print(p['purelib']); print(p['platlib'])",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            env={"PATH": "/usr/bin:/bin"},
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError) as exc:
        return _Toolchain("python", {}, missing=f"Python interpreter {py} does not start: {exc}")
    prefix, exec_prefix, purelib, platlib = (os.path.realpath(p) for p in out[:4])
    binds = tuple(sorted({p for p in (prefix, exec_prefix) if not _path_is_under(p, _ALWAYS_BOUND)}))
    binds = tuple(b for b in binds if not any(b != o and _path_is_under(b, [o]) for o in binds))
    if not _path_is_under(py, (*_ALWAYS_BOUND, *binds)):
        binds += _prefix_binds(py)
    hide = tuple(sorted({p for p in (purelib, platlib) if os.path.isdir(p)}))
    return _Toolchain("python", {"python": py}, binds=binds, hide=hide)


def _node_toolchain(config: SandboxConfig) -> _Toolchain:
    node = _resolve(config.node_path, ["node", "nodejs"])
    if node is None:
        return _Toolchain("javascript", {}, missing="Node.js not found (install nodejs or set node_path)")
    return _Toolchain("javascript", {"node": node}, binds=_prefix_binds(node))


def _cpp_toolchain(config: SandboxConfig) -> _Toolchain:
    gxx = _resolve(config.gxx_path, ["g++"])
    if gxx is None:
        return _Toolchain("cpp", {}, missing="g++ not found (install g++ or set gxx_path)")
    return _Toolchain("cpp", {"gxx": gxx}, binds=_prefix_binds(gxx))


def _java_toolchain(config: SandboxConfig) -> _Toolchain:
    javac = _resolve(config.javac_path, ["javac"])
    java = _resolve(config.java_path, ["java"])
    if javac is None or java is None:
        which = "javac" if javac is None else "java"
        return _Toolchain("java", {}, missing=f"{which} not found (install a JDK or set {which}_path)")
    homes = {os.path.dirname(os.path.dirname(b)) for b in (javac, java)}
    binds = {h for h in homes if not _path_is_under(h, _ALWAYS_BOUND)}
    files: set[str] = set()
    # Debian's JDK keeps its configuration in /etc/java-N-openjdk behind symlinks.
    for home in homes:
        for root, dirnames, filenames in os.walk(home):
            for name in dirnames + filenames:
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    continue
                target = os.path.realpath(full)
                if _path_is_under(target, [home, *_ALWAYS_BOUND, *binds]) or not os.path.exists(target):
                    continue
                parts = target.split("/")
                if len(parts) > 3 and parts[1] == "etc" and parts[2].startswith("java"):
                    binds.add("/".join(parts[:3]))
                elif os.path.isfile(target):
                    files.add(target)
    return _Toolchain(
        "java", {"javac": javac, "java": java}, binds=tuple(sorted(binds)), bind_files=tuple(sorted(files))
    )


_TOOLCHAIN_BUILDERS: dict[str, Callable[[SandboxConfig], _Toolchain]] = {
    "python": _python_toolchain,
    "javascript": _node_toolchain,
    "cpp": _cpp_toolchain,
    "java": _java_toolchain,
}


# --------------------------------------------------------------------------------------
# The probe: what this host allows, computed once per config


@dataclass
class _Probe:
    status: SandboxStatus
    config: SandboxConfig
    bwrap: str | None = None
    bwrap_features: frozenset[str] = frozenset()
    root_links: tuple[tuple[str, str], ...] = ()  # ("/bin", "usr/bin") symlinks; ("/lib", "") real dirs
    toolchains: dict[str, _Toolchain] = field(default_factory=dict)
    mntns_fd: int | None = None
    uids: _UidSlots | None = None
    cgroups: tuple[_CgroupHierarchy, ...] = ()
    kill_binary: str | None = None
    work_root: str = ""
    javac_archive: str | None = None  # host path of a sealed AppCDS archive that speeds javac up


_STATE_LOCK = threading.Lock()
_PROBES: dict[SandboxConfig, _Probe] = {}
_TOOLCHAIN_STATUS: dict[SandboxConfig, dict[str, ToolchainStatus]] = {}


def sandbox_status(config: SandboxConfig | None = None) -> SandboxStatus:
    """Whether and how programs can be sandboxed here; probed once (a trial sandbox really runs)."""
    return _probe(config or SandboxConfig()).status


def _probe(config: SandboxConfig) -> _Probe:
    probe = _PROBES.get(config)
    if probe is None:
        with _STATE_LOCK:
            probe = _PROBES.get(config)
            if probe is None:
                probe = _PROBES[config] = _make_probe(config)
    return probe


def _make_probe(config: SandboxConfig) -> _Probe:
    mode = config.mode
    if mode not in ("bwrap", "unsafe-rlimits-only"):
        return _Probe(SandboxStatus(False, mode, f"unknown sandbox mode {mode!r}"), config)
    is_root = os.geteuid() == 0
    work_root = os.path.realpath(config.work_root or tempfile.gettempdir())
    probe = _Probe(SandboxStatus(False, mode, None), config, work_root=work_root)
    if not os.path.isdir(work_root):
        probe.status = SandboxStatus(False, mode, f"work_root {work_root} is not a directory")
        return probe
    probe.toolchains = {lang: _TOOLCHAIN_BUILDERS[lang](config) for lang in LANGUAGES}
    probe.kill_binary = _resolve(None, ["kill"])
    if is_root:
        uids = _free_uid_range(config.uid_base, config.uid_count)
        if not uids:
            probe.status = SandboxStatus(False, mode, f"no free uid in {config.uid_base}+{config.uid_count}")
            return probe
        probe.uids = _UidSlots(uids)
        needed = [work_root]
        for tc in probe.toolchains.values():
            needed += [*tc.binds, *tc.binaries.values()]
        needed = sorted({d if os.path.isdir(d) else os.path.dirname(d) for d in needed})
        needed = [d for d in needed if _first_blocking_ancestor(d)]
        needed = [d for d in needed if not any(d != o and _path_is_under(d, [o]) for o in needed)]
        if needed:
            fd, err = _hostview(tuple(needed))
            if err:
                probe.status = SandboxStatus(False, mode, err)
                return probe
            probe.mntns_fd = fd
    if config.cgroups:
        try:
            probe.cgroups = tuple(_cgroup_hierarchies())
        except OSError:
            probe.cgroups = ()
    per_run_uid = probe.uids is not None
    _become_subreaper()
    version = None
    if mode == "bwrap":
        path = config.bwrap_path
        bwrap = _resolve(path, []) if "/" in path else _resolve(None, [path])
        if bwrap is None:
            probe.status = SandboxStatus(False, mode, "bwrap not found", per_run_uid=per_run_uid)
            return probe
        probe.bwrap = bwrap
        try:
            help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
            version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            probe.status = SandboxStatus(False, mode, f"bwrap does not start: {exc}")
            return probe
        probe.bwrap_features = frozenset(f for f in ("--disable-userns", "--size") if f in help_text)
        links = []
        for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(name):
                links.append((name, os.readlink(name)))
            elif os.path.isdir(name):
                links.append((name, ""))
        probe.root_links = tuple(links)
    # Really start something once, the way every run will be started.
    true = _resolve(None, ["true"]) or "/usr/bin/true"
    outcome = _run_sync(probe, _trial_stage([true]))
    if outcome.returncode != 0 and probe.cgroups:
        probe.cgroups = ()  # a hierarchy we may create in but not join: do without
        retry = _run_sync(probe, _trial_stage([true]))
        if retry.returncode == 0:
            outcome = retry
    controllers = tuple(sorted({c for h in probe.cgroups for c in h.controllers}))
    if outcome.returncode != 0:
        err = outcome.start_error or _decode(outcome.stderr).strip() or f"exit status {outcome.returncode}"
        if mode == "bwrap" and ("namespace" in err or "not permitted" in err.lower() or "No permissions" in err):
            reason = f"user namespaces forbidden: {err}"
        else:
            reason = f"sandbox failed to start: {err}"
        probe.status = SandboxStatus(False, mode, reason, per_run_uid=per_run_uid, cgroups=controllers)
        return probe
    if mode == "unsafe-rlimits-only":
        reason = "namespaces disabled by configuration (unsafe-rlimits-only)"
        probe.status = SandboxStatus(False, mode, reason, usable=True, per_run_uid=per_run_uid, cgroups=controllers)
    else:
        probe.status = SandboxStatus(
            True, mode, None, usable=True, per_run_uid=per_run_uid, cgroups=controllers, bwrap_version=version
        )
    return probe


def toolchains(config: SandboxConfig | None = None) -> dict[str, ToolchainStatus]:
    """Per language: available and its version, or why not; detected once (versions run sandboxed)."""
    config = config or SandboxConfig()
    found = _TOOLCHAIN_STATUS.get(config)
    if found is not None:
        return found
    probe = _probe(config)
    with _STATE_LOCK:
        found = _TOOLCHAIN_STATUS.get(config)
        if found is None:
            found = _TOOLCHAIN_STATUS[config] = _detect_toolchains(probe)
    return found


_VERSION_COMMANDS: dict[str, tuple[str, list[str]]] = {
    "python": ("python", ["-I", "-S", "-c", "import sys; print('Python ' + sys.version.split()[0])"]),
    "javascript": ("node", ["--version"]),
    "cpp": ("gxx", ["--version"]),
    "java": ("javac", ["-J-Xshare:auto", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", "-version"]),
}


def _detect_toolchains(probe: _Probe) -> dict[str, ToolchainStatus]:
    result: dict[str, ToolchainStatus] = {}
    todo: dict[str, _Stage] = {}
    for lang in LANGUAGES:
        tc = probe.toolchains.get(lang)
        if tc is None or tc.missing:
            result[lang] = ToolchainStatus(lang, False, reason=tc.missing if tc else "not probed")
        elif not probe.status.usable:
            result[lang] = ToolchainStatus(lang, False, reason=f"sandbox unavailable: {probe.status.reason}")
        else:
            role, args = _VERSION_COMMANDS[lang]
            todo[lang] = _trial_stage([tc.binaries[role], *args], toolchain=tc, generous=True)

    async def run_all() -> list[_Outcome]:
        return await asyncio.gather(*(_run_stage_with_uid(probe, st) for st in todo.values()))

    outcomes = _in_fresh_loop(run_all) if todo else []
    for (lang, _st), out in zip(todo.items(), outcomes, strict=True):
        text = (_decode(out.stdout) + _decode(out.stderr)).strip()
        if out.returncode == 0 and text:
            result[lang] = ToolchainStatus(lang, True, version=text.splitlines()[0].strip())
        else:
            first = text.splitlines()[0] if text else f"exit status {out.returncode}"
            result[lang] = ToolchainStatus(lang, False, reason=f"does not run in the sandbox: {first}")
    if result["java"].available:
        probe.javac_archive = _javac_archive(probe)
    return {lang: result[lang] for lang in LANGUAGES}


_JAVAC_ARCHIVES: dict[tuple[str, str], str | None] = {}
_JAVA_FAST = ["-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData"]
_JAVAC_WARMUP = """import java.util.*;
import java.util.stream.*;
public class Warmup {
    record Pair(int a, String b) {}
    public static void main(String[] args) throws Exception {
        Scanner in = new Scanner(System.in);
        Map<String, List<Integer>> m = new HashMap<>();
        List<Pair> ps = new ArrayList<>(List.of(new Pair(1, "x")));
        System.out.println(IntStream.range(0, 3).boxed().collect(Collectors.toList()) + " " + m + ps);
    }
}
"""


def _javac_archive(probe: _Probe) -> str | None:
    """A dynamic AppCDS archive of javac (halves its start-up), dumped in the sandbox.

    The dump runs as a sandbox stage; its output is copied into a root-owned read-only file
    in a root-owned directory ``<work_root>/exec-cache-<key>`` (key: the JDK's identity), which
    later compile stages bind read-only and later server processes reuse. Only in bwrap
    mode (in the weaker mode a program could reach the file). Best effort: None on failure.
    """
    if probe.config.mode != "bwrap":
        return None
    tc = probe.toolchains["java"]
    javac = tc.binaries["javac"]
    modules = os.path.join(os.path.dirname(os.path.dirname(javac)), "lib", "modules")
    identity = [javac, *(str(os.stat(p).st_mtime_ns) for p in (javac, modules) if os.path.exists(p))]
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    if (probe.work_root, key) not in _JAVAC_ARCHIVES:
        cache_dir = os.path.join(probe.work_root, f"exec-cache-{key}")
        archive = _trusted_cache_file(cache_dir, "javac.jsa")
        if archive is None:
            try:
                archive = _in_fresh_loop(lambda: _dump_javac_archive(probe, tc, cache_dir))
            except (OSError, subprocess.SubprocessError):
                archive = None
        _JAVAC_ARCHIVES[(probe.work_root, key)] = archive  # type: ignore[assignment]
    return _JAVAC_ARCHIVES[(probe.work_root, key)]


async def _dump_javac_archive(probe: _Probe, tc: _Toolchain, cache_dir: str) -> str | None:
    async with _uid_slot(probe) as uid:
        workdir = _make_workdir(probe.work_root, "Warmup.java", _JAVAC_WARMUP, uid)
        try:
            stage = _Stage(
                cmd=[
                    tc.binaries["javac"],
                    *(f"-J{f}" for f in _JAVA_FAST),
                    "-J-XX:ArchiveClassesAtExit=javac.jsa",
                    "-J-Xlog:disable",
                    "-proc:none",
                    "-d",
                    ".",
                    "Warmup.java",
                ],
                toolchain=tc,
                timeout_s=60.0,
                limits=Limits(timeout_s=60.0),
                memory_kind="managed",
                memory_mb=2048,
                nproc=256,
                nofile=1024,
                env={"MALLOC_ARENA_MAX": "2"},
                stdin=b"",
                workdir=workdir,
                uid=uid,
            )
            out = await _run_stage(probe, stage)
            if out.returncode != 0:
                return None
            return _install_cache_file(workdir, "javac.jsa", cache_dir, max_bytes=256 * _MB)
        finally:
            await _uncancellable(asyncio.to_thread(_remove_workdir, workdir))


def _trusted_cache_file(cache_dir: str, name: str) -> str | None:
    """cache_dir/name if both are ours (not links), and neither is writable by anyone else."""
    path = os.path.join(cache_dir, name)
    try:
        dir_st, file_st = os.lstat(cache_dir), os.lstat(path)
    except OSError:
        return None
    me = os.geteuid()
    if (
        stat.S_ISDIR(dir_st.st_mode)
        and stat.S_ISREG(file_st.st_mode)
        and dir_st.st_uid == file_st.st_uid == me
        and not dir_st.st_mode & 0o022
        and not file_st.st_mode & 0o222
    ):
        return path
    return None


def _install_cache_file(directory: str, name: str, cache_dir: str, *, max_bytes: int) -> str | None:
    """Copy a regular file (never through a link) into cache_dir/name, read-only, owned by us."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(src, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        data = f.read(max_bytes + 1)
    staging = tempfile.mkdtemp(prefix="exec-staging-", dir=os.path.dirname(cache_dir))
    fd = os.open(os.path.join(staging, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, cache_dir)  # atomic; fails if another process got there first
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return _trusted_cache_file(cache_dir, name)


def _in_fresh_loop(fn: Callable[[], object]):
    """Run an async function to completion in a new loop on a new thread (safe from any caller)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(fn())  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="execution-probe")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def _run_sync(probe: _Probe, stage: _Stage) -> _Outcome:
    return _in_fresh_loop(lambda: _run_stage_with_uid(probe, stage))  # type: ignore[return-value]


def _trial_stage(cmd: list[str], toolchain: _Toolchain | None = None, generous: bool = False) -> _Stage:
    """A stage for probes: `true` in an empty sandbox, or a toolchain's version command."""
    limits = Limits(timeout_s=30.0) if generous else Limits(timeout_s=10.0)
    return _Stage(
        cmd=cmd,
        toolchain=toolchain,
        timeout_s=limits.timeout_s,
        limits=limits,
        memory_kind="managed" if generous else "native",
        memory_mb=2048 if generous else limits.memory_mb,
        nproc=128 if generous else 16,
        nofile=256,
        env={"MALLOC_ARENA_MAX": "2"},
        stdin=b"",
        workdir=None,
    )


# --------------------------------------------------------------------------------------
# Running one stage


@dataclass
class _Stage:
    cmd: list[str]  # the program to run (inside the sandbox, relative paths are in /box)
    toolchain: _Toolchain | None
    timeout_s: float
    limits: Limits
    memory_kind: str  # "native" (AS = memory) or "managed" (JVM / V8: AS = memory + slack)
    memory_mb: int
    nproc: int
    nofile: int
    env: dict[str, str]
    stdin: bytes
    workdir: str | None  # host path of the run directory (None: no work dir, probes)
    uid: int | None = None
    extra_binds: tuple[tuple[str, str], ...] = ()  # (host file, path inside), read-only


@dataclass
class _Outcome:
    returncode: int | None = None  # 128 + signal for signals
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    timed_out: bool = False
    flooded: bool = False
    oom_killed: bool = False
    cpu_limited: bool = False
    elapsed_s: float = 0.0
    start_error: str | None = None


_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}


def _rlimits(stage: _Stage, probe: _Probe) -> list[tuple[int, int, int]]:
    limits = stage.limits
    cpu = math.ceil(stage.timeout_s) + 1
    if stage.memory_kind == "managed":
        # Reservations (thread stacks, code cache, class space) are not memory; with a memory
        # cgroup bounding the resident total, the address space can be generous.
        has_memcg = any("memory" in h.controllers for h in probe.cgroups)
        slack = _RUNTIME_AS_SLACK_CGROUP_MB if has_memcg else _RUNTIME_AS_SLACK_MB
        address_space = _mb(stage.memory_mb + slack)
    else:
        address_space = _mb(stage.memory_mb)
    nproc = stage.nproc + _BWRAP_PROCS
    if probe.uids is None:  # shared uid: count what it already runs
        nproc += _uid_task_count(os.getuid())
    wanted = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, address_space, address_space),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_FSIZE, _mb(limits.file_size_mb), _mb(limits.file_size_mb)),
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


def _make_preexec(
    *,
    mntns_fd: int | None,
    rlimits: list[tuple[int, int, int]],
    cgroup_fds: list[int],
    uid: int | None,
    cwd: str | None,
) -> Callable[[], None]:
    """Runs in the forked child before exec: join cgroups, setns, rlimits, drop to the run's uid.

    Only calls that take no lock another thread could hold (no imports, no logging).
    """
    setns, setrlimit, write, chdir = _SETNS, resource.setrlimit, os.write, os.chdir
    setgroups, setresgid, setresuid = os.setgroups, os.setresgid, os.setresuid
    zero, no_groups = b"0", ()
    pairs = [(res, (soft, hard)) for res, soft, hard in rlimits]  # built before the fork

    def preexec() -> None:
        for fd in cgroup_fds:
            write(fd, zero)
        if mntns_fd is not None:
            if setns(mntns_fd, _CLONE_NEWNS) != 0:
                raise OSError("setns into the toolchain mount namespace failed")
            if cwd is not None:
                chdir(cwd)  # setns moved us to the namespace's root
        if uid is not None:
            setgroups(no_groups)
            setresgid(uid, uid, uid)
            setresuid(uid, uid, uid)
        for res, pair in pairs:  # last: RLIMIT_AS may be below this forked copy's own size
            setrlimit(res, pair)

    return preexec


def _bwrap_argv(probe: _Probe, stage: _Stage, *, info_fd: int) -> list[str]:
    tmp_size = str(_mb(stage.limits.tmpfs_mb))
    sized = "--size" in probe.bwrap_features
    argv = [probe.bwrap or "bwrap", "--info-fd", str(info_fd), "--unshare-all", "--unshare-user"]
    if "--disable-userns" in probe.bwrap_features:
        argv.append("--disable-userns")
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for name, target in probe.root_links:
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
    argv += (["--size", tmp_size] if sized else []) + ["--tmpfs", "/tmp"]
    argv += (["--size", tmp_size] if sized else []) + ["--tmpfs", "/dev/shm"]
    if stage.workdir is not None:
        argv += ["--bind", stage.workdir, _BOX, "--chdir", _BOX]
    else:
        argv += ["--chdir", "/tmp"]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--clearenv"]
    for key, value in {**_BASE_ENV, **stage.env}.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *stage.cmd]


async def _run_stage_with_uid(probe: _Probe, stage: _Stage) -> _Outcome:
    """Run a stage under a freshly acquired uid (for probes; runs hold one uid for all stages)."""
    async with _uid_slot(probe) as uid:
        stage.uid = uid
        return await _run_stage(probe, stage)


@contextlib.asynccontextmanager
async def _uid_slot(probe: _Probe):
    if probe.uids is None:
        yield None
        return
    uid = probe.uids.try_acquire()
    while uid is None:  # more concurrent runs than uids: wait for one
        await asyncio.sleep(0.02)
        uid = probe.uids.try_acquire()
    try:
        yield uid
    finally:
        probe.uids.release(uid)


async def _run_stage(probe: _Probe, stage: _Stage) -> _Outcome:
    isolated = probe.config.mode == "bwrap"  # never run unsandboxed unless configured so
    outcome = _Outcome()
    cgroup = None
    if probe.cgroups:
        if stage.memory_kind == "managed":
            cg_memory = stage.memory_mb + _RUNTIME_RSS_SLACK_MB
        else:
            cg_memory = stage.memory_mb + _NATIVE_RSS_SLACK_MB
        try:
            cgroup = _RunCgroup(probe.cgroups, memory_bytes=_mb(cg_memory), pids=stage.nproc + _BWRAP_PROCS)
        except OSError:
            cgroup = None  # a full or vanished hierarchy: rlimits still apply
    sandbox = _Sandbox(probe, stage, isolated=isolated)
    try:
        started = time.monotonic()
        try:
            await sandbox.start(cgroup)
        except (OSError, subprocess.SubprocessError) as exc:
            outcome.start_error = f"could not start the sandbox: {exc}"
            return outcome
        await sandbox.supervise(outcome)
        outcome.elapsed_s = time.monotonic() - started
        if cgroup and cgroup.oom_killed():
            outcome.oom_killed = True
    finally:
        # Also on cancellation: kill and wait until every process of the stage is gone.
        await _uncancellable(sandbox.close())
        if cgroup:
            cgroup.close()
    return outcome


async def _uncancellable(awaitable):
    """Await to completion even if the caller is cancelled (then re-raise the cancellation)."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


class _Sandbox:
    """One stage's process tree: the outer process, the sandbox's pid 1, and everything below.

    Exits are watched with pidfds, not with ``Process.wait()``, which in Python 3.11 also
    waits for the pipes to close (a detached child holding stdout would look like a hang).

    bwrap's outer process exits as soon as its init reports the program's exit status,
    without reaping that init; so the server is a child subreaper (set by the probe), the
    orphaned init is re-parented to it, and close() waits on the init's pidfd until it is
    dead (the kernel lets a pid namespace's init die only once every other process in the
    namespace is gone) and reaps it.
    """

    def __init__(self, probe: _Probe, stage: _Stage, *, isolated: bool) -> None:
        self.probe, self.stage, self.isolated = probe, stage, isolated
        self.proc: asyncio.subprocess.Process | None = None
        self._pidfds: list[int] = []
        self._watched: list[int] = []
        self.outer_exited: asyncio.Future[None] | None = None
        self.init_pidfd: int | None = None
        self.init_exited: asyncio.Future[None] | None = None
        self._info_fd: int | None = None
        self._info = bytearray()
        self._info_done: asyncio.Future[None] | None = None
        self._closed = False

    async def start(self, cgroup: _RunCgroup | None) -> None:
        stage, probe = self.stage, self.probe
        loop = asyncio.get_running_loop()
        _become_subreaper()  # one syscall; the attribute is not inherited by forked workers
        pass_fds: tuple[int, ...] = ()
        info_w = None
        if self.isolated:
            self._info_fd, info_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            os.set_blocking(info_w, True)
            pass_fds = (info_w,)
            argv = _bwrap_argv(probe, stage, info_fd=info_w)
            cwd, env = None, {"PATH": "/usr/bin:/bin"}
        else:
            argv, cwd = stage.cmd, stage.workdir or probe.work_root
            env = {**_BASE_ENV, "TMPDIR": cwd, "HOME": cwd, **stage.env}
        preexec = _make_preexec(
            mntns_fd=probe.mntns_fd,
            rlimits=_rlimits(stage, probe),
            cgroup_fds=cgroup.procs_fds if cgroup else [],
            uid=stage.uid,
            cwd=cwd,
        )
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stage.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                preexec_fn=preexec,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
            )
        finally:
            if info_w is not None:
                os.close(info_w)
        self.outer_exited = self._watch_exit(self.proc.pid)
        if self._info_fd is not None:
            self._info_done = loop.create_future()
            loop.add_reader(self._info_fd, self._on_info)

    def _watch_exit(self, pid: int) -> asyncio.Future[None]:
        """A future done when `pid` exits (or is already gone)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            done.set_result(None)
            return done
        self._pidfds.append(pidfd)

        def ready() -> None:
            loop.remove_reader(pidfd)
            self._watched.remove(pidfd)
            if not done.done():
                done.set_result(None)

        loop.add_reader(pidfd, ready)
        self._watched.append(pidfd)
        return done

    def _on_info(self) -> None:
        """bwrap writes {"child-pid": N, ...} right after creating the sandbox's pid 1."""
        try:
            chunk = os.read(self._info_fd, 4096)  # type: ignore[arg-type]
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self._info += chunk
        if self.init_exited is None:
            m = re.search(rb'"child-pid":\s*(\d+)', self._info)
            if m:
                self.init_exited = self._watch_exit(int(m.group(1)))
                if not self.init_exited.done():
                    self.init_pidfd = self._pidfds[-1]
        if not chunk:  # read to EOF: closing early would SIGPIPE bwrap in the middle of its report
            self._stop_info()

    def _stop_info(self) -> None:
        if self._info_fd is not None:
            asyncio.get_running_loop().remove_reader(self._info_fd)
            os.close(self._info_fd)
            self._info_fd = None
        if self._info_done is not None and not self._info_done.done():
            self._info_done.set_result(None)

    async def supervise(self, outcome: _Outcome) -> None:
        proc, stage = self.proc, self.stage
        assert proc is not None and self.outer_exited is not None
        budget = [stage.limits.output_bytes]
        flood = asyncio.Event()

        async def pump(stream: asyncio.StreamReader, sink: bytearray) -> None:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                if len(chunk) > budget[0]:
                    sink += chunk[: budget[0]]
                    budget[0] = 0
                    outcome.flooded = True
                    flood.set()
                    while await stream.read(65536):  # discard until EOF (the sandbox is being killed)
                        pass
                    return
                sink += chunk
                budget[0] -= len(chunk)

        async def feed(writer: asyncio.StreamWriter, data: bytes) -> None:
            with contextlib.suppress(OSError, RuntimeError):  # BrokenPipe / ConnectionReset: it stopped reading
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

        tasks = [
            asyncio.create_task(pump(proc.stdout, outcome.stdout)),  # type: ignore[arg-type]
            asyncio.create_task(pump(proc.stderr, outcome.stderr)),  # type: ignore[arg-type]
        ]
        if proc.stdin:
            tasks.append(asyncio.create_task(feed(proc.stdin, stage.stdin)))
        flooded = asyncio.create_task(flood.wait())
        try:
            done, _ = await asyncio.wait(
                {self.outer_exited, flooded}, timeout=stage.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if self.outer_exited not in done:
                outcome.timed_out = not flood.is_set()
            await self.close()  # kills what is left; returns once every process is gone
            # Every writer is dead now, so the pipes reach EOF promptly.
            await asyncio.wait(tasks, timeout=_KILL_GRACE_S)
        finally:
            for t in (*tasks, flooded):
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, flooded, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # the transport has seen EOF everywhere: let it finish
            await asyncio.wait_for(proc.wait(), _KILL_GRACE_S)
        rc = proc.returncode
        if rc is not None and not outcome.timed_out and not outcome.flooded:
            outcome.returncode = 128 - rc if rc < 0 else rc
            outcome.cpu_limited = outcome.returncode == 128 + signal.SIGXCPU

    async def close(self) -> None:
        """Kill whatever still runs and return only when all of it is gone (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc is not None:
                await self._close_tree()
        finally:
            self._stop_info()
            loop = asyncio.get_running_loop()
            for fd in self._watched:
                loop.remove_reader(fd)
            self._watched.clear()
            for fd in self._pidfds:
                os.close(fd)
            self._pidfds.clear()

    async def _close_tree(self) -> None:
        proc, outer_exited = self.proc, self.outer_exited
        assert proc is not None and outer_exited is not None
        if not self.isolated:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await self._wait_outer()
            await _sweep(proc, self.stage, self.probe)  # no pid namespace: detached children may remain
            return
        if not outer_exited.done():
            await self._kill_init()
        await self._wait_outer()
        # The outer may have exited before we read its report: collect it now.
        if self._info_done is not None and not self._info_done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._info_done), _KILL_GRACE_S)
        if self.init_exited is None:
            await _sweep(proc, self.stage, self.probe)  # never saw pid 1: be thorough
            return
        for attempt in range(2):
            try:
                await asyncio.wait_for(asyncio.shield(self.init_exited), _KILL_GRACE_S)
                break
            except TimeoutError:
                if self.init_pidfd is not None:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
                if attempt:
                    await _sweep(proc, self.stage, self.probe)
        if self.init_pidfd is not None:
            _reap_pidfd(self.init_pidfd)  # ours as subreaper: reap it

    async def _kill_init(self) -> None:
        proc = self.proc
        assert proc is not None
        if self.init_exited is None and self._info_done is not None and not self._info_done.done():
            with contextlib.suppress(TimeoutError):  # bwrap writes it within milliseconds of starting
                await asyncio.wait_for(asyncio.shield(self._info_done), 1.0)
        if self.init_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _wait_outer(self) -> None:
        proc, outer_exited = self.proc, self.outer_exited
        assert proc is not None and outer_exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(outer_exited), _KILL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(outer_exited)
        for _ in range(1000):  # the child watcher reaps it and sets the code right after
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.001)


def _reap_pidfd(pidfd: int) -> None:
    """Reap an exited child by pidfd (never blocks; ECHILD if it is not ours: someone else reaps it)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


async def _sweep(proc, stage: _Stage, probe: _Probe) -> None:
    """As the run's own uid, SIGKILL every process of that uid (root only; the uid is this run's)."""
    if stage.uid is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    if probe.kill_binary:
        argv = [probe.kill_binary, "-9", "-1"]
    else:
        argv = [_default_python(), "-I", "-S", "-c", "import os; os.kill(-1, 9)"]
    for _ in range(3):
        sweeper = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
            user=stage.uid,
            group=stage.uid,
            extra_groups=[],
            close_fds=True,
        )
        await sweeper.wait()
        await asyncio.sleep(0.005)
        _reap_orphans(stage.uid, exclude=proc.pid)
        if not _uid_has_processes(stage.uid):
            return
        await asyncio.sleep(0.01)


def _reap_orphans(uid: int, *, exclude: int) -> None:
    """Reap zombies of the run's uid re-parented to us (the server is a subreaper).

    Only this run uses that uid, so no other run's (asyncio-watched) child is touched.
    """
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        text = _read_text(f"/proc/{entry}/status") or ""
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if (
            fields.get("PPid", "").strip() == me
            and fields.get("State", "").strip().startswith("Z")
            and fields.get("Uid", "").split()[:1] == [str(uid)]
        ):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)


def _uid_has_processes(uid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    return True
    return False


# --------------------------------------------------------------------------------------
# Languages


_JAVA_NOISE = re.compile(r'"""[\s\S]*?"""|//[^\n]*|/\*[\s\S]*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
_JAVA_TYPE = re.compile(
    r"\b(?P<public>public\s+)?(?:(?:abstract|final|strictfp|sealed|non-sealed|static)\s+)*"
    r"(?:class|interface|enum|record)\s+(?P<name>[A-Za-z_$][\w$]*)"
)
_JAVA_MAIN = re.compile(r"\bstatic\s+(?:final\s+)?void\s+main\s*\(|\bvoid\s+static\s+main\s*\(")
_JAVA_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_$][\w$]*(?:\s*\.\s*[A-Za-z_$][\w$]*)*)\s*;", re.M)


def java_main_class(code: str) -> tuple[str, str]:
    """(source file stem, class to run): the public top-level type names the file; Main otherwise.

    The class to run is the first top-level type declaring main (the public one first),
    qualified by the package if there is one.
    """
    text = _JAVA_NOISE.sub(lambda m: " " * len(m.group(0)), code)
    tops: list[tuple[str, bool, int, int]] = []  # (name, public, start, end)
    depth, pos = 0, 0
    for m in _JAVA_TYPE.finditer(text):
        depth += text.count("{", pos, m.start()) - text.count("}", pos, m.start())
        pos = m.start()
        if depth != 0:
            continue
        body_start = text.find("{", m.end())
        end, d = len(text), 0
        if body_start >= 0:
            for i in range(body_start, len(text)):
                if text[i] == "{":
                    d += 1
                elif text[i] == "}":
                    d -= 1
                    if d == 0:
                        end = i
                        break
        tops.append((m.group("name"), bool(m.group("public")), m.start(), end))
    public = next((name for name, pub, _, _ in tops if pub), None)
    if public and len(public) > 200:
        public = None
    stem = public or "Main"
    with_main = [(name, pub) for name, pub, s, e in tops if _JAVA_MAIN.search(text, s, e)]
    with_main.sort(key=lambda item: not item[1])
    run = with_main[0][0] if with_main else (public or (tops[0][0] if tops else "Main"))
    package = _JAVA_PACKAGE.search(text)
    if package:
        run = re.sub(r"\s+", "", package.group(1)) + "." + run
    return stem, run


@dataclass(frozen=True)
class _Plan:
    source: str  # file name in the run directory
    compile_cmd: list[str] | None
    run_cmd: list[str]
    memory_kind: str
    env: dict[str, str]


def _plan(
    language: str, code: str, tc: _Toolchain, limits: Limits, *, roomy: bool, javac_archive: str | None = None
) -> _Plan:
    """The commands of a language; `roomy`: a memory cgroup bounds RSS, so reservations may be large.

    `javac_archive` is javac's AppCDS archive as the compile stage sees it, if any.
    """
    mem = limits.memory_mb
    if language == "python":
        return _Plan("main.py", None, [tc.binaries["python"], "-I", "-B", "-u", "main.py"], "native", {})
    if language == "javascript":
        cmd = [tc.binaries["node"], f"--max-old-space-size={mem}", "main.js"]
        return _Plan("main.js", None, cmd, "managed", {"MALLOC_ARENA_MAX": "2"})
    if language == "cpp":
        compile_cmd = [
            tc.binaries["gxx"],
            "-std=gnu++17",
            "-O2",
            "-pipe",
            "-fdiagnostics-color=never",
            "-o",
            "main",
            "main.cpp",
        ]
        return _Plan("main.cpp", compile_cmd, ["./main"], "native", {})
    if language == "java":
        stem, run = java_main_class(code)
        fast = _JAVA_FAST
        cds = [f"-J-XX:SharedArchiveFile={javac_archive}", "-J-Xlog:disable"] if javac_archive else []
        compile_cmd = [
            tc.binaries["javac"],
            *(f"-J{f}" for f in fast),
            *cds,
            f"-J-Xmx{max(64, limits.compile_memory_mb // 2)}m",
            "-encoding",
            "UTF-8",
            "-proc:none",
            "-d",
            ".",
            f"{stem}.java",
        ]
        run_cmd = [
            tc.binaries["java"],
            *fast,
            f"-Xmx{mem}m",
            "-Xss32m" if roomy else "-Xss16m",  # deep recursion; reserved address space, not memory
            "-XX:ReservedCodeCacheSize=64m",
            "-XX:CompressedClassSpaceSize=64m",
            "-XX:MaxMetaspaceSize=256m",
            "-cp",
            ".",
            run,
        ]
        return _Plan(f"{stem}.java", compile_cmd, run_cmd, "managed", {"MALLOC_ARENA_MAX": "2"})
    raise ValueError(language)


# --------------------------------------------------------------------------------------
# Reading results


def _signal_name(code: int) -> str | None:
    if 128 < code < 128 + 65:
        with contextlib.suppress(ValueError):
            return signal.Signals(code - 128).name
    return None


def _exit_sentence(code: int) -> str:
    name = _signal_name(code)
    return f"Killed by signal {name}" if name else f"Process exited with code {code}"


_PY_EXC = re.compile(r"^[A-Za-z_][\w.]*(?::.*)?$")
_JS_ERR = re.compile(r"^(?:Uncaught )?(?:[A-Z][\w$]*)?(?:Error|Exception)(?: \[[\w_]+\])?(?::.*)?$")
_JAVA_ERR = re.compile(r'^(?:Exception in thread "[^"]*" )?([\w$.]*(?:Exception|Error)\b.*)$')


def _runtime_error_line(language: str, stderr: str, code: int) -> str:
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    if language == "python" and lines:
        if "Traceback (most recent call last):" in stderr or re.search(r"^\w*Error\b", stderr, re.M):
            for ln in reversed(lines):
                if not ln[0].isspace() and _PY_EXC.match(ln) and not ln.startswith("Traceback"):
                    return ln
    elif language == "javascript":
        for ln in lines:
            if _JS_ERR.match(ln):
                return ln
    elif language == "java":
        for ln in lines:
            m = _JAVA_ERR.match(ln)
            if m:
                return m.group(1)
    elif language == "cpp":
        for i, ln in enumerate(lines):
            if ln.startswith("terminate called"):
                if i + 1 < len(lines) and lines[i + 1].strip().startswith("what():"):
                    return f"{ln}: {lines[i + 1].strip()[len('what():') :].strip()}"
                return ln
    return _exit_sentence(code)


def _looks_like_oom(language: str, stderr: str) -> bool:
    if language == "python":
        return bool(re.search(r"^MemoryError\b", stderr, re.M))
    if language == "cpp":
        return "std::bad_alloc" in stderr
    if language == "java":
        return "java.lang.OutOfMemoryError" in stderr and "unable to create native thread" not in stderr
    if language == "javascript":
        return any(
            s in stderr
            for s in ("JavaScript heap out of memory", "Reached heap limit", "Array buffer allocation failed")
        )
    return False


_COMPILER_OOM = ("out of memory", "virtual memory exhausted", "OutOfMemoryError", "std::bad_alloc")


def _compile_error_line(language: str, stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    pattern = r"error:" if language == "cpp" else r"^\S+\.java:\d+: error:"
    for ln in lines:
        if re.search(pattern, ln):
            return ln
    return lines[0] if lines else "Compilation failed"


# --------------------------------------------------------------------------------------
# The entry point


def _unavailable(message: str, started: float) -> ExecutionResult:
    return ExecutionResult(
        success=False,
        stdout="",
        stderr="",
        exit_code=None,
        execution_time_ms=int((time.monotonic() - started) * 1000),
        error=message,
        status="unavailable",
        truncated=False,
    )


_LANGUAGE_NAMES = {"python": "Python", "javascript": "JavaScript", "java": "Java", "cpp": "C++"}


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
    limits = limits or Limits()
    config = config or SandboxConfig()
    if language not in LANGUAGES:
        return _unavailable(f"Unsupported language: {language}", started)
    probe = _PROBES.get(config) or await asyncio.to_thread(_probe, config)
    if not probe.status.usable:
        return _unavailable(f"Code execution is unavailable: {probe.status.reason}", started)
    statuses = _TOOLCHAIN_STATUS.get(config) or await asyncio.to_thread(toolchains, config)
    tc_status = statuses[language]
    if not tc_status.available:
        return _unavailable(f"{_LANGUAGE_NAMES[language]} is not available: {tc_status.reason}", started)
    tc = probe.toolchains[language]
    isolated = config.mode == "bwrap"
    extra_binds: tuple[tuple[str, str], ...] = ()
    archive = probe.javac_archive if language == "java" else None
    if archive and isolated:
        extra_binds, archive = ((archive, _JAVAC_ARCHIVE_IN_SANDBOX),), _JAVAC_ARCHIVE_IN_SANDBOX
    roomy = any("memory" in h.controllers for h in probe.cgroups)
    plan = _plan(language, code, tc, limits, roomy=roomy, javac_archive=archive)
    async with _uid_slot(probe) as uid:
        try:
            workdir = _make_workdir(probe.work_root, plan.source, code, uid)
        except OSError as exc:
            return _unavailable(f"Code execution is unavailable: cannot prepare a run directory ({exc})", started)
        try:
            return await _compile_and_run(language, plan, tc, limits, stdin, workdir, uid, probe, started, extra_binds)
        finally:
            await _uncancellable(asyncio.to_thread(_remove_workdir, workdir))


async def _compile_and_run(
    language: str,
    plan: _Plan,
    tc: _Toolchain,
    limits: Limits,
    stdin: str,
    workdir: str,
    uid: int | None,
    probe: _Probe,
    started: float,
    compile_binds: tuple[tuple[str, str], ...] = (),
) -> ExecutionResult:
    def finish(**kw) -> ExecutionResult:
        status = kw["status"]
        return ExecutionResult(
            success=status == "ok",
            stdout=kw.get("stdout", ""),
            stderr=kw.get("stderr", ""),
            exit_code=kw.get("exit_code"),
            execution_time_ms=int((time.monotonic() - started) * 1000),
            error=kw.get("error"),
            status=status,
            truncated=kw.get("truncated", False),
        )

    if plan.compile_cmd is not None:
        compile_stage = _Stage(
            cmd=plan.compile_cmd,
            toolchain=tc,
            timeout_s=limits.compile_timeout_s,
            limits=limits,
            memory_kind=plan.memory_kind,
            memory_mb=limits.compile_memory_mb,
            nproc=max(limits.max_processes, 64),
            nofile=max(limits.open_files, 256),
            env=plan.env,
            stdin=b"",
            workdir=workdir,
            uid=uid,
            extra_binds=compile_binds,
        )
        out = await _run_stage(probe, compile_stage)
        if out.start_error:
            return finish(status="unavailable", error=out.start_error)
        if out.timed_out or out.cpu_limited or out.flooded or out.oom_killed or out.returncode != 0:
            stderr = _decode(out.stdout) + _decode(out.stderr)
            if out.timed_out or out.cpu_limited:
                error = f"Compilation time limit exceeded ({_fmt_seconds(limits.compile_timeout_s)} s)"
            elif out.oom_killed or any(s in stderr for s in _COMPILER_OOM):
                error = "Compilation memory limit exceeded"
            else:
                error = _compile_error_line(language, stderr)
            return finish(status="compile_error", stderr=stderr, error=error, truncated=out.flooded)

    run_stage = _Stage(
        cmd=plan.run_cmd,
        toolchain=tc,
        timeout_s=limits.timeout_s,
        limits=limits,
        memory_kind=plan.memory_kind,
        memory_mb=limits.memory_mb,
        nproc=limits.max_processes,
        nofile=limits.open_files,
        env=plan.env,
        stdin=stdin.encode("utf-8", errors="replace"),
        workdir=workdir,
        uid=uid,
    )
    out = await _run_stage(probe, run_stage)
    if out.start_error:
        return finish(status="unavailable", error=out.start_error)
    stdout, stderr = _decode(out.stdout), _decode(out.stderr)
    common = {"stdout": stdout, "stderr": stderr, "truncated": out.flooded}
    if out.flooded:
        return finish(status="output_limit", error=f"Output limit exceeded ({limits.output_bytes} bytes)", **common)
    if out.timed_out or out.cpu_limited:
        return finish(status="timeout", error=f"Time limit exceeded ({_fmt_seconds(limits.timeout_s)} s)", **common)
    code = out.returncode if out.returncode is not None else -1
    if out.oom_killed or (code != 0 and _looks_like_oom(language, stderr)):
        return finish(status="memory_limit", error="Memory limit exceeded", exit_code=code, **common)
    if code == 0:
        return finish(status="ok", exit_code=0, **common)
    return finish(status="runtime_error", error=_runtime_error_line(language, stderr, code), exit_code=code, **common)


def _make_workdir(work_root: str, source_name: str, code: str, uid: int | None) -> str:
    """A fresh 0700 directory holding the source, handed to the run's uid via its descriptor."""
    path = tempfile.mkdtemp(prefix="exec-", dir=work_root)
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(
                source_name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=dir_fd,
            )
            with os.fdopen(fd, "wb") as f:
                f.write(code.encode("utf-8", errors="replace"))
            if uid is not None:
                os.fchown(dir_fd, uid, uid)
        finally:
            os.close(dir_fd)
    except BaseException:
        _remove_workdir(path)
        raise
    return path


def _remove_workdir(path: str) -> None:
    """Remove a run directory without following any link the program planted (fd-based rmtree)."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux always has it
        raise RuntimeError("refusing to remove a sandbox directory without a symlink-safe rmtree")

    def onerror(func, failed_path, _exc_info) -> None:
        # The program may have left a directory without permissions (when we are not root).
        # Every process of the run is dead, so nothing races us here; no link is followed.
        with contextlib.suppress(OSError):
            st = os.lstat(failed_path)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(failed_path, 0o700)
                shutil.rmtree(failed_path, ignore_errors=True)
            else:
                parent = os.path.dirname(failed_path)
                os.chmod(parent, 0o700)
                os.unlink(failed_path)

    shutil.rmtree(path, onerror=onerror)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
