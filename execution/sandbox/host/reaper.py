"""Sweeping: a run's leftovers are killed as its own uid (the spawner reaps what it leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal

from execution.sandbox.host import read_text
from execution.sandbox.host.uids import uid_has_processes
from execution.sandbox.types import default_python

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_CHILD_SUBREAPER = 36


async def kill_uid_processes(proc, uid: int | None, kill_binary: str | None) -> None:
    """As the run's own uid, SIGKILL every process of that uid (root only; the uid is this run's)."""
    if uid is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    if kill_binary:
        argv = [kill_binary, "-9", "-1"]
    else:
        argv = [default_python(), "-I", "-S", "-c", "import os; os.kill(-1, 9)"]
    for _ in range(3):
        sweeper = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
            user=uid,
            group=uid,
            extra_groups=[],
            close_fds=True,
        )
        await sweeper.wait()
        await asyncio.sleep(0.005)
        reap_orphans(uid, exclude=proc.pid)
        if not uid_has_processes(uid):
            return
        await asyncio.sleep(0.01)


def reap_orphans(uid: int, *, exclude: int) -> None:
    """Reap zombies of the run's uid re-parented to us (a sweep's own children).

    Only this run uses that uid, so no other run's (asyncio-watched) child is touched.
    """
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        text = read_text(f"/proc/{entry}/status") or ""
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if (
            fields.get("PPid", "").strip() == me
            and fields.get("State", "").strip().startswith("Z")
            and fields.get("Uid", "").split()[:1] == [str(uid)]
        ):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)
