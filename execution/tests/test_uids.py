"""Per-run uid slots: a uid that still runs something is not handed out (no sandbox needed, root only)."""

import os
import subprocess

import pytest

from execution.sandbox.host.uids import UidSlots, free_uid_range

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another uid")


@pytest.fixture
def uid():
    free = free_uid_range(59500, 16)
    assert free, "no free uid in 59500..59515"
    return free[0]


def process_as(uid: int) -> subprocess.Popen:
    return subprocess.Popen(["/bin/sleep", "1000"], user=uid, group=uid, extra_groups=[])


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


class TestUidSlots:
    def test_a_uid_left_running_by_someone_is_not_handed_out(self, uid):
        """A uid owning a live process (a crashed server's leftover) is skipped until it is gone."""
        slots = UidSlots([uid])
        leftover = process_as(uid)
        try:
            assert slots.try_acquire() is None
        finally:
            stop(leftover)
        assert slots.try_acquire() == uid
        slots.release(uid)

    def test_a_checked_uid_is_checked_again_once_suspected(self, uid):
        """A uid is scanned once; after `suspect` (a sweep that left doubt) it is scanned again."""
        slots = UidSlots([uid])
        assert slots.try_acquire() == uid
        slots.release(uid)
        leftover = process_as(uid)
        try:
            assert slots.try_acquire() == uid  # found clean before, and our runs end with their processes
            slots.release(uid)
            slots.suspect(uid)
            assert slots.try_acquire() is None
        finally:
            stop(leftover)
