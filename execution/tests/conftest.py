"""Fixtures of the real-sandbox tests; what they share besides lives in `helpers.py`, imported
only when one of them runs, so the tests that need no sandbox never probe for one."""

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def sandbox_work_root():
    """The work root the sandbox tests share, removed when the session ends."""
    from execution.tests.helpers import WORK_ROOT

    yield WORK_ROOT
    shutil.rmtree(WORK_ROOT, ignore_errors=True)


@pytest.fixture
def nothing_left_behind(sandbox_work_root):
    """After every test: no process of a run uid is alive, and no run directory, mount or run
    filesystem (a detached mount this process still holds) remains."""
    from execution.tests.helpers import IS_ROOT, PREEXISTING, detached_mounts_held, mount_table, processes_of_run_uids

    mounts = mount_table()
    yield
    if IS_ROOT:
        assert set(processes_of_run_uids()) <= PREEXISTING
    assert [name for name in os.listdir(sandbox_work_root) if not name.startswith("exec-cache-")] == []
    assert mount_table() == mounts
    assert detached_mounts_held() == []
