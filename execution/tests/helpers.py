"""What the real-sandbox tests share: one work root, the sandbox found there, a run, and the
host's view of a run's processes (no Django)."""

import asyncio
import os
import tempfile
import textwrap
import time
import uuid

import pytest

from execution.sandbox import ExecutionResult, Limits, SandboxConfig, run_code, sandbox_status, toolchains

# One work root for every sandbox test module, traversable by the per-run uids, checked empty after
# each test (`nothing_left_behind` in conftest.py) and removed at the end of the session.
WORK_ROOT = tempfile.mkdtemp(prefix="runner-tests-")
os.chmod(WORK_ROOT, 0o711)
CONFIG = SandboxConfig(work_root=WORK_ROOT)
STATUS = sandbox_status(CONFIG)
TOOLCHAINS = toolchains(CONFIG)
IS_ROOT = os.geteuid() == 0
SLOW = Limits(timeout_s=1.0)


# Each module of tests that run code: `pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]`.
needs_sandbox = pytest.mark.skipif(not STATUS.usable, reason=f"no usable sandbox here: {STATUS.reason}")


def needs(language):
    tc = TOOLCHAINS[language]
    return pytest.mark.skipif(not tc.available, reason=f"{language} toolchain missing: {tc.reason}")


async def run(language, code, stdin="", limits=None, config=CONFIG) -> ExecutionResult:
    return await run_code(
        language=language, code=textwrap.dedent(code), stdin=stdin, limits=limits or Limits(), config=config
    )


def processes_of_run_uids() -> list[tuple[int, int]]:
    """(pid, uid) of live processes of the per-run uid range started by this test process
    (directly, not by a server it started: a server's spare sandboxes are its own).

    Other processes on the machine (another test session, a server) may use the same range.
    """
    parents, uids = {}, {}
    low, high = CONFIG.uid_base, CONFIG.uid_base + CONFIG.uid_count
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                uids[int(entry)] = os.stat(f"/proc/{entry}").st_uid
            except (OSError, IndexError, ValueError):
                continue
    me, found = os.getpid(), []
    spawners = spawner_pids()
    for pid, uid in uids.items():
        if low <= uid < high:
            # Through run-uid processes and this process's spawner only: a server this test
            # started (not a run uid) owns its own.
            ancestor, hops = parents.get(pid), 0
            while ancestor not in (None, 0, 1, me) and hops < 64:
                if ancestor in spawners:
                    ancestor = me
                    break
                if not low <= uids.get(ancestor, -1) < high:
                    break
                ancestor, hops = parents.get(ancestor), hops + 1
            if ancestor == me:
                found.append((pid, uid))
    return found


def spawner_pids() -> set[int]:
    """The pids of this process's sandbox spawners (the parents of every stage's outer process)."""
    from execution.sandbox.host import spawner

    return {s.pid for s in spawner._SPAWNERS.values() if s.pid is not None}


def sleep_token() -> str:
    """A unique, valid `sleep` argument (about 1000 s) to find a sleeper by its argv."""
    return f"1000.{uuid.uuid4().int % 10**12:012d}"


def uids_of(pid: int) -> tuple[int, ...] | None:
    """(real, effective, saved, fs) uids of a process, read from the host."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(ln for ln in f if ln.startswith("Uid:"))
    except (OSError, StopIteration):
        return None
    return tuple(int(x) for x in line.split()[1:5])


def processes_with(token: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


async def processes_appearing(token: str, wait_s: float = 5.0) -> list[int]:
    """The pids of processes whose argv has token, as soon as there is one (or [] after wait_s)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        found = processes_with(token)
        if found:
            return found
        await asyncio.sleep(0.02)
    return []


def mount_table() -> list[str]:
    """This process's mounts (mountinfo lines without the ids, which nothing else reuses)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" ", 2)[2] for line in f)


def detached_mounts_held() -> list[int]:
    """Descriptors of this process on the root of a mount outside its namespace (a run filesystem
    not destroyed): the kernel shows such a path as "/" while it is not our root's device."""
    root_dev, held = os.stat("/").st_dev, []
    for name in os.listdir("/proc/self/fd"):
        path = f"/proc/self/fd/{name}"
        try:
            if os.readlink(path) == "/" and os.stat(path).st_dev != root_dev:
                held.append(int(name))
        except OSError:
            continue
    return held


def mounts_of_device(major: int, minor: int) -> list[int]:
    """The pids whose mount namespace (any we may read) still holds a mount of this device."""
    needle, found = f" {major}:{minor} ", []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    if any(needle in line for line in f):
                        found.append(int(entry))
            except OSError:
                continue
    return found


async def host_uids_of(token: str, wait_s: float = 3.0) -> list[tuple[int, ...]]:
    """The (real, effective, saved, fs) uids, read from the host, of processes whose argv has token."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        found = []
        for pid in processes_with(token):
            uids = uids_of(pid)
            if uids:
                found.append(uids)
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


PREEXISTING = set(processes_of_run_uids())  # e.g. left by an earlier, killed test session
