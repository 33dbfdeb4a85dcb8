"""javac's class-data archive: dumped once in a sandbox, kept root-owned and read-only, reused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from typing import TYPE_CHECKING

from execution.sandbox.bwrap import MB
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.host.uids import uid_slot
from execution.sandbox.languages.java import JAVA_FAST
from execution.sandbox.process import Stage, in_fresh_loop, run_stage, uncancellable
from execution.sandbox.types import Limits
from execution.sandbox.workdir import make_workdir, remove_workdir

if TYPE_CHECKING:
    from execution.sandbox.host.setup import Host

_JAVAC_ARCHIVES: dict[tuple[str, str], str | None] = {}
_ARCHIVE_MAX_BYTES = 256 * MB
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


def javac_archive(host: Host) -> str | None:
    """A dynamic AppCDS archive of javac (halves its start-up), dumped in the sandbox.

    The dump runs as a sandbox stage; its output is copied into a root-owned read-only file
    in a root-owned directory ``<work_root>/exec-cache-<key>`` (key: the JDK's identity), which
    later compile stages bind read-only and later server processes reuse. Only in bwrap
    mode (in the weaker mode a program could reach the file). Best effort: None on failure.
    """
    if host.config.mode != "bwrap":
        return None
    tc = host.toolchains["java"]
    javac = tc.binaries["javac"]
    modules = os.path.join(os.path.dirname(os.path.dirname(javac)), "lib", "modules")
    identity = [javac, *(str(os.stat(p).st_mtime_ns) for p in (javac, modules) if os.path.exists(p))]
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    if (host.work_root, key) not in _JAVAC_ARCHIVES:
        cache_dir = os.path.join(host.work_root, f"exec-cache-{key}")
        archive = _trusted_cache_file(cache_dir, "javac.jsa")
        if archive is None:
            try:
                archive = in_fresh_loop(lambda: _dump_javac_archive(host, tc, cache_dir))
            except (OSError, subprocess.SubprocessError):
                archive = None
        _JAVAC_ARCHIVES[(host.work_root, key)] = archive  # type: ignore[assignment]
    return _JAVAC_ARCHIVES[(host.work_root, key)]


async def _dump_javac_archive(host: Host, tc: Toolchain, cache_dir: str) -> str | None:
    async with uid_slot(host.uids) as uid:
        size = 2 * _ARCHIVE_MAX_BYTES  # room for the archive while the JVM writes it
        workdir = make_workdir(host.work_root, "Warmup.java", _JAVAC_WARMUP, uid, tmpfs=host.run_fs, size_bytes=size)
        try:
            stage = Stage(
                cmd=[
                    tc.binaries["javac"],
                    *(f"-J{f}" for f in JAVA_FAST),
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
            out = await run_stage(host, stage)
            if out.returncode != 0:
                return None
            box = workdir.open_box()
            try:
                return _install_cache_file(box, "javac.jsa", cache_dir, max_bytes=_ARCHIVE_MAX_BYTES)
            finally:
                os.close(box)
        finally:
            await uncancellable(asyncio.to_thread(remove_workdir, workdir))


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


def _install_cache_file(dir_fd: int, name: str, cache_dir: str, *, max_bytes: int) -> str | None:
    """Copy a regular file of dir_fd (never through a link) into cache_dir/name, read-only, owned by us."""
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
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
