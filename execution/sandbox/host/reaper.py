"""Sweeping: a run's leftovers are killed as its own uid (the spawner reaps what it leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from execution.sandbox.host.uids import uid_has_processes
from execution.sandbox.types import default_python


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
        if not uid_has_processes(uid):
            return
        await asyncio.sleep(0.01)
