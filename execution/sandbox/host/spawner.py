"""The spawner: a small helper process that starts every stage's outer process for the server.

A stage's child must join its cgroups, enter the toolchain mount namespace, drop to the
run's uid and set its rlimits between fork and exec. Done by the server itself, that is a
`preexec_fn`, which makes Python fork instead of vfork: copying the page tables of a
100 MB server and holding the GIL until the child has run its Python set-up took 7-15 ms
per stage here, during which no other request, WebSocket or run made progress. So the
server starts, once, a helper (its own base interpreter, ``-I -S``, standard library only,
a few MB) and asks it over a socket pair: argv, environment, directory, rlimits, uid, and
the descriptors (stdin/stdout/stderr, bwrap's info and filter fds, the cgroup.procs files,
the mount namespace) passed as SCM_RIGHTS. The helper forks (cheap at its size), the child
does the set-up and execs, and the helper answers with the pid or the error the child hit
before its exec.

The helper is a child subreaper and reaps everything: the outer processes (each one's
exit code is written into a pipe the server handed over with the request: that pipe is
how the server learns the exit and its code) and the sandboxes' orphaned pid-1 processes
(the server watches those with pidfds and kills them with pidfd_send_signal, which needs
no parenthood). It lives as long as its socket: when the server goes, it reads EOF and
exits, and bwrap's --die-with-parent takes every sandbox it started down with it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from dataclasses import dataclass

_HELPER = r"""
import array, ctypes, fcntl, json, os, resource, select, signal, socket, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: a sandbox's orphaned init comes to us
sock = socket.socket(fileno=int(sys.argv[1]))
os.set_inheritable(sock.fileno(), False)
wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
status_of = {}  # outer pid -> the pipe its exit code goes into


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_of.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            except OSError:
                pass
            os.close(fd)


def child(req, fds, err_w):
    high = max([target for _, target in req["place"]]) + 1  # copies above every target: none clobbered
    err_w = fcntl.fcntl(err_w, fcntl.F_DUPFD_CLOEXEC, high)
    os.setsid()
    for fd in fds[req["cgroups"][0]:req["cgroups"][1]]:
        os.write(fd, b"0")
    if req["mntns"] is not None:
        if libc.setns(fds[req["mntns"]], 0x00020000) != 0:
            raise OSError(ctypes.get_errno(), "setns into the toolchain mount namespace")
    if req["attach"] is not None:
        attach(req["attach"], fds)
    placed = [(fcntl.fcntl(fds[i], fcntl.F_DUPFD_CLOEXEC, high), target) for i, target in req["place"]]
    for fd, target in placed:
        os.dup2(fd, target)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    if req["cwd"] is not None:
        os.chdir(req["cwd"])
    uid = req["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for res, soft, hard in req["rlimits"]:  # last: RLIMIT_AS may be below what we use
        resource.setrlimit(res, (soft, hard))
    os.execve(req["argv"][0], req["argv"], req["env"])


def receive(sock):
    # Close-on-exec as they arrive (socket.recv_fds drops its flags): only what a request
    # places reaches the child's program.
    size = socket.CMSG_LEN(64 * 4)
    msg, ancdata, _flags, _addr = sock.recvmsg(1 << 20, size, socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", data[: len(data) - len(data) % 4])
    return msg, fds


def attach(how, fds):
    # The run's own filesystem (a detached tmpfs) on its mount point, in a mount namespace of
    # this child's own, private first so nothing propagates back (host/runfs.py made it).
    L = ctypes.c_long
    def check(result, what):
        if result < 0:
            raise OSError(ctypes.get_errno(), what)
    if how["userns"] is not None:
        check(libc.setns(fds[how["userns"]], 0x10000000), "setns into the run filesystem's user namespace")
    check(libc.unshare(0x00020000), "unshare(CLONE_NEWNS) for the run filesystem")
    check(libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None), "making the stage's mounts private")
    clone = libc.syscall(L(428), L(fds[how["fs"]]), b"", L(1 | os.O_CLOEXEC | 0x1000))  # open_tree(CLONE|EMPTY_PATH)
    check(clone, "open_tree(OPEN_TREE_CLONE) of the run filesystem")
    target = os.fsencode(how["path"])
    check(libc.syscall(L(429), L(clone), b"", L(-100), target, L(0x4)), "move_mount of the run filesystem")


def spawn(req, fds):
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            child(req, fds, err_w)
        except BaseException as exc:
            try:
                os.write(err_w, ("%s: %s" % (type(exc).__name__, exc)).encode()[:2000] or b"?")
            finally:
                os._exit(127)
    os.close(err_w)
    err = b""
    while True:
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        err += chunk
    os.close(err_r)
    status_w = fds[req["status"]]
    if err:
        return {"error": err.decode(errors="replace")}
    status_of[pid] = os.dup(status_w)
    return {"pid": pid}


while True:
    ready, _, _ = select.select([sock, wake_r], [], [])
    if wake_r in ready:
        try:
            os.read(wake_r, 4096)
        except BlockingIOError:
            pass
        reap()
    if sock in ready:
        try:
            msg, fds = receive(sock)
        except InterruptedError:
            continue
        if not msg:
            break  # the server is gone: so are we (and, by --die-with-parent, every sandbox)
        try:
            answer = spawn(json.loads(msg), fds)
        except Exception as exc:
            answer = {"error": "%s: %s" % (type(exc).__name__, exc)}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(answer).encode())
"""


@dataclass
class Request:
    """One outer process to start: what its child is given before exec."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    rlimits: list[tuple[int, int, int]]
    uid: int | None
    stdio: tuple[int, int, int]  # the child's stdin, stdout, stderr
    status_w: int  # the helper writes the exit code here (then closes it) when the process ends
    extra: tuple[tuple[int, int], ...] = ()  # (fd, number it must have in the child), e.g. bwrap's --info-fd
    cgroup_fds: tuple[int, ...] = ()  # cgroup.procs files the child writes "0" into
    mntns_fd: int | None = None
    attach: Attach | None = None  # the run's own filesystem, mounted in the child's own namespace


@dataclass(frozen=True)
class Attach:
    """A run's own filesystem (host/runfs.py) to attach on its mount point before exec."""

    fs_fd: int  # the detached tmpfs
    path: str  # the empty mount point on the host (bwrap binds its directories from there)
    userns_fd: int | None = None  # the user namespace to join first (an unprivileged server)


class SpawnFailed(OSError):
    """The child could not be started or failed before its exec (the reason is the message)."""


class Spawner:
    """The server's end of the helper: `spawn` starts a process and answers its pid.

    Thread-safe (one request at a time); starts the helper on first use and again if it died.
    """

    def __init__(self, python: str) -> None:
        self.python = python
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._helper: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The helper's pid while it runs."""
        helper = self._helper
        return helper.pid if helper is not None and helper.poll() is None else None

    def spawn(self, request: Request) -> int:
        fds = [*request.stdio, request.status_w]
        place = [[0, 0], [1, 1], [2, 2]]
        for fd, target in request.extra:
            place.append([len(fds), target])
            fds.append(fd)
        cgroups = [len(fds), len(fds) + len(request.cgroup_fds)]
        fds += request.cgroup_fds
        mntns = None
        if request.mntns_fd is not None:
            mntns = len(fds)
            fds.append(request.mntns_fd)
        attach = None
        if request.attach is not None:
            attach = {"fs": len(fds), "path": request.attach.path, "userns": None}
            fds.append(request.attach.fs_fd)
            if request.attach.userns_fd is not None:
                attach["userns"] = len(fds)
                fds.append(request.attach.userns_fd)
        message = {
            "argv": request.argv,
            "env": request.env,
            "cwd": request.cwd,
            "rlimits": request.rlimits,
            "uid": request.uid,
            "place": place,
            "status": 3,
            "cgroups": cgroups,
            "mntns": mntns,
            "attach": attach,
        }
        data = json.dumps(message).encode()
        with self._lock:
            for attempt in range(2):
                sock = self._ensure_helper()
                try:
                    socket.send_fds(sock, [data], fds)
                    reply = sock.recv(1 << 16)
                except OSError:
                    reply = b""
                if reply:
                    break
                self._drop_helper()  # it died: start a new one and ask again
                if attempt:
                    raise SpawnFailed("the sandbox spawner is not answering")
        answer = json.loads(reply)
        if "error" in answer:
            raise SpawnFailed(answer["error"])
        return int(answer["pid"])

    def _ensure_helper(self) -> socket.socket:
        if self._sock is not None and self._helper is not None and self._helper.poll() is None:
            return self._sock
        self._drop_helper()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._helper = subprocess.Popen(
                [self.python, "-I", "-S", "-c", _HELPER, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
                close_fds=True,
            )
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def _drop_helper(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._helper is not None:
            with contextlib.suppress(OSError):
                self._helper.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._helper.wait(5)
            self._helper = None


_SPAWNERS: dict[str, Spawner] = {}
_SPAWNERS_LOCK = threading.Lock()


def spawner_for(python: str) -> Spawner:
    """The process's spawner (one helper per interpreter path, for the life of the process)."""
    with _SPAWNERS_LOCK:
        found = _SPAWNERS.get(python)
        if found is None:
            found = _SPAWNERS[python] = Spawner(python)
        return found
