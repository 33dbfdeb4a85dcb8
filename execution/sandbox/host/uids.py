"""Per-run uids: a free range, exclusive slots across server processes, and what a uid still runs."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import re
import socket
import threading
from collections.abc import Sequence

from execution.sandbox.host import read_text


class UidSlots:
    """Exclusive per-run uids; an abstract unix socket per uid makes them exclusive across processes."""

    def __init__(self, uids: Sequence[int]) -> None:
        self._uids = list(uids)
        self._held: dict[int, socket.socket] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._clean: set[int] = set()  # uids found without processes since this process took them

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
                # Left over by a crashed server: not a clean slot. Checked once per uid (a scan of
                # /proc, 1-2 ms): after that, every run of ours ends only once its processes are
                # gone, and one whose sweep could not make sure of it calls `suspect`.
                if uid not in self._clean and uid_has_processes(uid):
                    sock.close()
                    continue
                self._clean.add(uid)
                self._held[uid] = sock
                self._next = (self._next + i + 1) % n
                return uid
            return None

    def suspect(self, uid: int) -> None:
        """Check this uid for processes again before handing it out (a sweep left doubt)."""
        with self._lock:
            self._clean.discard(uid)

    def release(self, uid: int) -> None:
        with self._lock:
            sock = self._held.pop(uid, None)
        if sock is not None:
            sock.close()


def free_uid_range(base: int, count: int) -> list[int]:
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


def uid_task_count(uid: int) -> int:
    """Tasks (threads) owned by uid: what RLIMIT_NPROC counts."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        text = read_text(f"/proc/{entry}/status") or ""
        m_uid = re.search(r"^Uid:\s+(\d+)", text, re.M)
        m_thr = re.search(r"^Threads:\s+(\d+)", text, re.M)
        if m_uid and m_thr and int(m_uid.group(1)) == uid:
            total += int(m_thr.group(1))
    return total


def uid_has_processes(uid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    return True
    return False


async def uid_take(slots: UidSlots | None) -> int | None:
    """A uid for one run (None when runs keep the server's uid); the caller releases it."""
    if slots is None:
        return None
    uid = slots.try_acquire()
    while uid is None:  # more concurrent runs than uids: wait for one
        await asyncio.sleep(0.02)
        uid = slots.try_acquire()
    return uid


@contextlib.asynccontextmanager
async def uid_slot(slots: UidSlots | None):
    """A uid for one run (None when runs keep the server's uid), released afterwards."""
    uid = await uid_take(slots)
    try:
        yield uid
    finally:
        if slots is not None and uid is not None:
            slots.release(uid)
