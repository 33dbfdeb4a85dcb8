"""The private mount namespace that makes root-only toolchain directories bindable by the run's uid."""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import subprocess
from collections.abc import Sequence

from execution.sandbox.types import default_python

CLONE_NEWNS = 0x00020000
setns = ctypes.CDLL(None, use_errno=True).setns


def first_blocking_ancestor(path: str) -> str | None:
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


_MOUNT_HELPER = r"""
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


_MOUNT_NAMESPACES: dict[tuple[str, ...], int] = {}


def toolchain_mount_namespace(dirs: tuple[str, ...]) -> tuple[int | None, str | None]:
    """One namespace per set of directories for the life of the process (configs may share it)."""
    if dirs not in _MOUNT_NAMESPACES:
        fd, err = _make_mount_namespace(dirs, default_python())
        if fd is None:
            return None, err
        _MOUNT_NAMESPACES[dirs] = fd
    return _MOUNT_NAMESPACES[dirs], None


def _make_mount_namespace(dirs: Sequence[str], python: str) -> tuple[int | None, str | None]:
    """A mount-namespace fd in which `dirs` are reachable by anyone (see the package's docstring)."""
    tops = sorted({t for d in dirs if (t := first_blocking_ancestor(d))})
    if not tops:
        return None, None
    helper = subprocess.Popen(
        [python, "-I", "-S", "-c", _MOUNT_HELPER, str(len(dirs)), *dirs, *tops],
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
