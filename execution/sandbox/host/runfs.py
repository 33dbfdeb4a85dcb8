"""A run's own filesystem: a detached tmpfs limited in size and inodes, attached only inside each stage.

The tmpfs is made with the new mount API (``fsopen``/``fsconfig``/``fsmount``) and never
attached in the server's mount namespace: the server holds it by a file descriptor (writes
the source through it, closes it to destroy the filesystem), and each stage's child, before
it execs bwrap, unshares a mount namespace of its own, makes it private and attaches a
clone of the tmpfs (``open_tree(OPEN_TREE_CLONE)`` + ``move_mount``) on the run's directory
path, where bwrap binds it by name. bwrap 0.8's ``--bind-fd`` cannot be used instead: it
resolves ``/proc/self/fd/N`` to a path ("/" for a detached mount), binds that, and then
dies with "Race condition binding dirfd".

Root makes the tmpfs itself. Any other uid lacks CAP_SYS_ADMIN for ``fsopen``, so a small
helper process (this file run as a script) lives in a user and mount namespace of its own,
in which that uid is mapped to itself, and answers each request with a tmpfs's descriptor
(SCM_RIGHTS); the stage's child then ``setns``es into the helper's user namespace to attach it.

Only the standard library: the helper runs this file alone (``python -I -S runfs.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

# The new mount API's syscall numbers are the same on every architecture but alpha.
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 428, 429, 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 1, 6
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x2, 0x4
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC, _AT_EMPTY_PATH = 1, os.O_CLOEXEC, 0x1000
_MOVE_MOUNT_F_EMPTY_PATH, _AT_FDCWD = 0x4, -100
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000

_libc = ctypes.CDLL(None, use_errno=True)
_syscall, _unshare, _mount, _setns = _libc.syscall, _libc.unshare, _libc.mount, _libc.setns
_L = ctypes.c_long
_HELPER_TIMEOUT_S = 10.0


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def make_tmpfs(size_bytes: int, inodes: int, uid: int, gid: int) -> int:
    """A new detached tmpfs (nosuid, nodev) whose root is uid's, mode 0700: its mount's descriptor."""
    if size_bytes < 1 or inodes < 1:  # tmpfs reads 0 as "unlimited"
        raise OSError(errno.EINVAL, f"a run filesystem needs a size and inodes above 0 ({size_bytes}, {inodes})")
    options = {"size": str(size_bytes), "nr_inodes": str(inodes), "mode": "0700", "uid": str(uid), "gid": str(gid)}
    fs = _check(_syscall(_L(_SYS_FSOPEN), b"tmpfs", _L(_FSOPEN_CLOEXEC)), "fsopen(tmpfs)")
    try:
        for key, value in options.items():
            set_string = _syscall(
                _L(_SYS_FSCONFIG), _L(fs), _L(_FSCONFIG_SET_STRING), key.encode(), value.encode(), _L(0)
            )
            _check(set_string, f"fsconfig({key}={value})")
        _check(_syscall(_L(_SYS_FSCONFIG), _L(fs), _L(_FSCONFIG_CMD_CREATE), None, None, _L(0)), "fsconfig(create)")
        attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
        return _check(_syscall(_L(_SYS_FSMOUNT), _L(fs), _L(_FSMOUNT_CLOEXEC), _L(attrs)), "fsmount")
    finally:
        os.close(fs)


def attacher(fs_fd: int, path: str, userns_fd: int | None) -> Callable[[], None]:
    """What a stage's child runs before exec: attach the run's tmpfs on `path` in a namespace of its own.

    Built before the fork; the returned function only makes syscalls. The namespace is private
    first, so nothing propagates back to the namespace it was copied from.
    """
    target = os.fsencode(path)
    open_tree = (_L(_SYS_OPEN_TREE), _L(fs_fd), b"", _L(_OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_EMPTY_PATH))
    newns, newuser = CLONE_NEWNS, CLONE_NEWUSER

    def attach() -> None:
        if userns_fd is not None and _setns(userns_fd, newuser) != 0:
            raise OSError("setns into the run filesystem's user namespace failed")
        if _unshare(newns) != 0:
            raise OSError("unshare(CLONE_NEWNS) for the run filesystem failed")
        if _mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError("making the stage's mount namespace private failed")
        clone = _syscall(*open_tree)
        if clone < 0:
            raise OSError("open_tree(OPEN_TREE_CLONE) of the run filesystem failed")
        if _syscall(_L(_SYS_MOVE_MOUNT), _L(clone), b"", _L(_AT_FDCWD), target, _L(_MOVE_MOUNT_F_EMPTY_PATH)) != 0:
            raise OSError("move_mount of the run filesystem failed")

    return attach


class TmpfsMaker:
    """Makes runs' tmpfs: directly as root, otherwise through the helper (see the module docstring)."""

    def make(self, size_bytes: int, inodes: int, uid: int | None) -> tuple[int, int | None]:
        """A tmpfs owned by uid (None: ours) and the user namespace to attach it from."""
        uid = os.getuid() if uid is None else uid
        return make_tmpfs(size_bytes, inodes, uid, uid), None


class _HelperMaker(TmpfsMaker):
    """Asks the helper for each tmpfs; starts a new helper if this one is gone (or we forked)."""

    def __init__(self, python: str) -> None:
        self._python = python
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._helper: subprocess.Popen | None = None
        self._pid = 0
        self._userns_fd: int | None = None

    def make(self, size_bytes: int, inodes: int, uid: int | None) -> tuple[int, int | None]:
        with self._lock:
            for attempt in range(2):
                if self._sock is None or self._pid != os.getpid():
                    self._start()
                try:
                    return self._ask(size_bytes, inodes)
                except (ConnectionError, EOFError, TimeoutError):
                    self._sock.close()  # type: ignore[union-attr]
                    self._sock = None  # the helper died or hangs (a late answer would be taken for the next): a new one
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    def _ask(self, size_bytes: int, inodes: int) -> tuple[int, int | None]:
        assert self._sock is not None
        self._sock.send(f"{size_bytes} {inodes}".encode())
        message, fds, _flags, _addr = socket.recv_fds(self._sock, 512, 1)
        if not message:
            raise EOFError
        if not fds:
            raise OSError(f"the run filesystem helper refused: {message.decode(errors='replace')}")
        return fds[0], self._userns_fd

    def _start(self) -> None:
        if self._helper is not None and self._pid == os.getpid():
            self._helper.poll()  # reap the one that died
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        ours.settimeout(_HELPER_TIMEOUT_S)  # a stopped helper fails runs instead of hanging the server
        try:
            helper = subprocess.Popen(
                [self._python, "-I", "-S", os.path.abspath(__file__), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
            )
        finally:
            theirs.close()
        try:
            ready = ours.recv(512)
        except TimeoutError:
            ready = b""
        if ready != b"ready":
            ours.close()
            helper.kill()
            helper.wait()
            raise OSError(f"the run filesystem helper did not start: {ready.decode(errors='replace') or 'it exited'}")
        # The namespace outlives the helper's reference through this descriptor (kept, even if a
        # later helper replaces this one: filesystems made by this one still need it).
        self._userns_fd = os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        # It exits when our end of the socket closes (at our exit too).
        self._sock, self._helper, self._pid = ours, helper, os.getpid()


_MAKER: tuple[TmpfsMaker | None, str | None] | None = None
_MAKER_LOCK = threading.Lock()


def tmpfs_maker(python: str) -> tuple[TmpfsMaker | None, str | None]:
    """This process's maker of run filesystems, tried once; or None and why there is none."""
    global _MAKER
    with _MAKER_LOCK:
        if _MAKER is None:
            maker: TmpfsMaker = TmpfsMaker() if os.geteuid() == 0 else _HelperMaker(python)
            try:
                fd, _userns = maker.make(1 << 20, 16, None)
                os.close(fd)
                _MAKER = (maker, None)
            except OSError as exc:
                _MAKER = (None, f"cannot make a tmpfs per run: {exc}")
    return _MAKER


def _serve(fd: int) -> None:
    """The helper: own user and mount namespaces, then one tmpfs per request until EOF."""
    sock = socket.socket(fileno=fd)
    uid, gid = os.getuid(), os.getgid()
    try:
        _check(_unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as exc:
        sock.send(str(exc).encode())
        return
    sock.send(b"ready")
    while request := sock.recv(512):
        try:
            size, inodes = (int(n) for n in request.split())
            tmpfs = make_tmpfs(size, inodes, uid, gid)
        except (OSError, ValueError) as exc:
            sock.send(str(exc).encode() or b"error")
            continue
        socket.send_fds(sock, [b"ok"], [tmpfs])
        os.close(tmpfs)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError, ConnectionError):
        _serve(int(sys.argv[1]))
