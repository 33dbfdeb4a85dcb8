"""The run directory: created private, the source written in, removed without following links."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile


def make_workdir(work_root: str, uid: int | None) -> str:
    """A fresh, empty 0700 directory, handed to the run's uid via its descriptor."""
    path = tempfile.mkdtemp(prefix="exec-", dir=work_root)
    try:
        if uid is not None:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchown(dir_fd, uid, uid)
            finally:
                os.close(dir_fd)
    except BaseException:
        remove_workdir(path)
        raise
    return path


def write_source(workdir: str, source_name: str, code: str) -> None:
    """The program's source in its run directory, written before anything of the run has run
    there (so no link can have been planted); O_EXCL|O_NOFOLLOW all the same."""
    dir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(
            source_name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        with os.fdopen(fd, "wb") as f:
            f.write(code.encode("utf-8", errors="replace"))
    finally:
        os.close(dir_fd)


def remove_workdir(path: str) -> None:
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
