"""A run's files: a filesystem of its own (or a private directory) with the source in it, destroyed after."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from execution.sandbox.host.runfs import TmpfsMaker

# An own filesystem holds every place the program may write, so they share one size and inode budget:
# (directory at its root, where the sandbox sees it).
RUN_FS_LAYOUT = (("box", "/box"), ("tmp", "/tmp"), ("shm", "/dev/shm"))
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Workdir:
    """Where a run's files are. With an own filesystem, ``path`` is only an empty mount point on the
    host: each stage's child attaches the filesystem there in a mount namespace of its own."""

    path: str  # the run directory on the host, or the mount point of the run's filesystem
    fs_fd: int | None = None  # the run's own tmpfs, detached; None: `path` itself is the run directory
    userns_fd: int | None = None  # the user namespace to join to attach fs_fd (unprivileged server)

    def open_box(self) -> int:
        """A descriptor of the directory the program sees as /box (the caller closes it)."""
        if self.fs_fd is None:
            return os.open(self.path, _OPEN_DIR)
        return os.open("box", _OPEN_DIR, dir_fd=self.fs_fd)


def make_workdir(
    work_root: str,
    source_name: str | None,
    code: str,
    uid: int | None,
    *,
    tmpfs: TmpfsMaker | None = None,
    size_bytes: int = 64 << 20,
    inodes: int = 4096,
) -> Workdir:
    """The run's files, uid's: a tmpfs of `size_bytes` and `inodes` when `tmpfs` makes one, else a
    0700 directory on the host's disk; the source (if named: a box made ahead of its program
    gets it later, `write_source`) is written in without following any link."""
    path = tempfile.mkdtemp(prefix="exec-", dir=work_root)
    workdir = Workdir(path)
    try:
        if tmpfs is not None:
            workdir.fs_fd, workdir.userns_fd = tmpfs.make(size_bytes, inodes, uid)
            for name, _ in RUN_FS_LAYOUT:
                os.mkdir(name, 0o700 if name == "box" else 0o755, dir_fd=workdir.fs_fd)
                if uid is not None:
                    os.chown(name, uid, uid, dir_fd=workdir.fs_fd, follow_symlinks=False)
        elif uid is not None:
            box_fd = workdir.open_box()
            try:
                os.fchown(box_fd, uid, uid)
            finally:
                os.close(box_fd)
        if source_name is not None:
            write_source(workdir, source_name, code)
    except BaseException:
        remove_workdir(workdir)
        raise
    return workdir


def write_source(workdir: Workdir, source_name: str, code: str) -> None:
    """The program's source in /box, written before anything of the run has run there (so no
    link can have been planted); O_EXCL|O_NOFOLLOW on the directory's descriptor all the same."""
    box_fd = workdir.open_box()
    try:
        fd = os.open(
            source_name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=box_fd,
        )
        with os.fdopen(fd, "wb") as f:
            f.write(code.encode("utf-8", errors="replace"))
    finally:
        os.close(box_fd)


def remove_workdir(workdir: Workdir) -> None:
    """Destroy the run's filesystem (close its last reference) or remove its directory (fd-based rmtree)."""
    if workdir.fs_fd is not None:
        fd, workdir.fs_fd = workdir.fs_fd, None
        os.close(fd)  # every stage's namespace is gone, so this frees the tmpfs and everything in it
        try:
            os.rmdir(workdir.path)  # the empty mount point: nothing was ever attached on the host
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
    _remove_tree(workdir.path)


def _remove_tree(path: str) -> None:
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
