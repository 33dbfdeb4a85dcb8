"""Running one stage: start it, feed stdin, capture output up to the cap, enforce wall time, kill and reap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from execution.sandbox.bwrap import BASE_ENV, bwrap_argv, cgroup_limits, make_preexec, rlimits
from execution.sandbox.host.cgroups import StageCgroup
from execution.sandbox.host.reaper import become_subreaper, kill_uid_processes, reap_pidfd
from execution.sandbox.host.runfs import attacher
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.host.uids import uid_slot
from execution.sandbox.types import Limits
from execution.sandbox.workdir import Workdir

if TYPE_CHECKING:
    from execution.sandbox.host.setup import Host

_KILL_GRACE_S = 5.0


@dataclass
class Stage:
    cmd: list[str]  # the program to run (inside the sandbox, relative paths are in /box)
    toolchain: Toolchain | None
    timeout_s: float
    limits: Limits
    memory_kind: str  # "native" (AS = memory) or "managed" (JVM / V8: AS = memory + slack)
    memory_mb: int
    nproc: int
    nofile: int
    env: dict[str, str]
    stdin: bytes
    workdir: Workdir | None  # the run's files (None: no work dir, probes)
    uid: int | None = None
    extra_binds: tuple[tuple[str, str], ...] = ()  # (host file, path inside), read-only


@dataclass
class Outcome:
    returncode: int | None = None  # 128 + signal for signals
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    timed_out: bool = False
    output_capped: bool = False
    oom_killed: bool = False
    cpu_limited: bool = False
    elapsed_s: float = 0.0
    start_error: str | None = None


async def run_stage_with_own_uid(host: Host, stage: Stage) -> Outcome:
    """Run a stage under a freshly acquired uid (for probes; runs hold one uid for all stages)."""
    async with uid_slot(host.uids) as uid:
        stage.uid = uid
        return await run_stage(host, stage)


async def run_stage(host: Host, stage: Stage) -> Outcome:
    """Run one stage to its end; returns only once every process of it is gone."""
    isolated = host.config.mode == "bwrap"  # never run unsandboxed unless configured so
    outcome = Outcome()
    cgroup = None
    if host.cgroups:
        try:
            cgroup = StageCgroup(host.cgroups, **cgroup_limits(stage))
        except OSError:
            cgroup = None  # a full or vanished hierarchy: rlimits still apply
    sandbox = StageProcess(host, stage, isolated=isolated)
    try:
        started = time.monotonic()
        try:
            await sandbox.start(cgroup)
        except (OSError, subprocess.SubprocessError) as exc:
            outcome.start_error = f"could not start the sandbox: {exc}"
            return outcome
        await sandbox.supervise(outcome)
        outcome.elapsed_s = time.monotonic() - started
        if cgroup and cgroup.oom_killed():
            outcome.oom_killed = True
    finally:
        # Also on cancellation: kill and wait until every process of the stage is gone.
        await uncancellable(sandbox.close())
        if cgroup:
            cgroup.close()
    return outcome


async def uncancellable(awaitable):
    """Await to completion even if the caller is cancelled (then re-raise the cancellation)."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


class StageProcess:
    """One stage's process tree: the outer process, the sandbox's pid 1, and everything below.

    Exits are watched with pidfds, not with ``Process.wait()``, which in Python 3.11 also
    waits for the pipes to close (a detached child holding stdout would look like a hang).

    bwrap's outer process exits as soon as its init reports the program's exit status,
    without reaping that init; so the server is a child subreaper (set up with the host), the
    orphaned init is re-parented to it, and close() waits on the init's pidfd until it is
    dead (the kernel lets a pid namespace's init die only once every other process in the
    namespace is gone) and reaps it.
    """

    def __init__(self, host: Host, stage: Stage, *, isolated: bool) -> None:
        self.host, self.stage, self.isolated = host, stage, isolated
        self.proc: asyncio.subprocess.Process | None = None
        self._pidfds: list[int] = []
        self._watched: list[int] = []
        self.outer_exited: asyncio.Future[None] | None = None
        self.init_pidfd: int | None = None
        self.init_exited: asyncio.Future[None] | None = None
        self._info_fd: int | None = None
        self._info = bytearray()
        self._info_done: asyncio.Future[None] | None = None
        self._closed = False

    async def start(self, cgroup: StageCgroup | None) -> None:
        stage, host = self.stage, self.host
        loop = asyncio.get_running_loop()
        become_subreaper()  # one syscall; the attribute is not inherited by forked workers
        pass_fds: tuple[int, ...] = ()
        info_w = None
        workdir, attach = stage.workdir, None
        if self.isolated:
            self._info_fd, info_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            os.set_blocking(info_w, True)
            pass_fds = (info_w,)
            argv = bwrap_argv(host, stage, info_fd=info_w)
            cwd, env = None, {"PATH": "/usr/bin:/bin"}
            if workdir is not None and workdir.fs_fd is not None:
                attach = attacher(workdir.fs_fd, workdir.path, workdir.userns_fd)
        else:
            argv, cwd = stage.cmd, workdir.path if workdir is not None else host.work_root
            env = {**BASE_ENV, "TMPDIR": cwd, "HOME": cwd, **stage.env}
        preexec = make_preexec(
            mntns_fd=host.mntns_fd,
            rlimits=rlimits(stage, host),
            cgroup_fds=cgroup.procs_fds if cgroup else [],
            uid=stage.uid,
            cwd=cwd,
            attach=attach,
        )
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stage.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                preexec_fn=preexec,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
            )
        finally:
            if info_w is not None:
                os.close(info_w)
        self.outer_exited = self._watch_exit(self.proc.pid)
        if self._info_fd is not None:
            self._info_done = loop.create_future()
            loop.add_reader(self._info_fd, self._on_info)

    def _watch_exit(self, pid: int) -> asyncio.Future[None]:
        """A future done when `pid` exits (or is already gone)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            done.set_result(None)
            return done
        self._pidfds.append(pidfd)

        def ready() -> None:
            loop.remove_reader(pidfd)
            self._watched.remove(pidfd)
            if not done.done():
                done.set_result(None)

        loop.add_reader(pidfd, ready)
        self._watched.append(pidfd)
        return done

    def _on_info(self) -> None:
        """bwrap writes {"child-pid": N, ...} right after creating the sandbox's pid 1."""
        try:
            chunk = os.read(self._info_fd, 4096)  # type: ignore[arg-type]
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self._info += chunk
        if self.init_exited is None:
            m = re.search(rb'"child-pid":\s*(\d+)', self._info)
            if m:
                self.init_exited = self._watch_exit(int(m.group(1)))
                if not self.init_exited.done():
                    self.init_pidfd = self._pidfds[-1]
        if not chunk:  # read to EOF: closing early would SIGPIPE bwrap in the middle of its report
            self._stop_info()

    def _stop_info(self) -> None:
        if self._info_fd is not None:
            asyncio.get_running_loop().remove_reader(self._info_fd)
            os.close(self._info_fd)
            self._info_fd = None
        if self._info_done is not None and not self._info_done.done():
            self._info_done.set_result(None)

    async def supervise(self, outcome: Outcome) -> None:
        proc, stage = self.proc, self.stage
        assert proc is not None and self.outer_exited is not None
        budget = [stage.limits.output_bytes]
        over_cap = asyncio.Event()

        async def pump(stream: asyncio.StreamReader, sink: bytearray) -> None:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                if len(chunk) > budget[0]:
                    sink += chunk[: budget[0]]
                    budget[0] = 0
                    outcome.output_capped = True
                    over_cap.set()
                    while await stream.read(65536):  # discard until EOF (the sandbox is being killed)
                        pass
                    return
                sink += chunk
                budget[0] -= len(chunk)

        async def feed(writer: asyncio.StreamWriter, data: bytes) -> None:
            with contextlib.suppress(OSError, RuntimeError):  # BrokenPipe / ConnectionReset: it stopped reading
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

        tasks = [
            asyncio.create_task(pump(proc.stdout, outcome.stdout)),  # type: ignore[arg-type]
            asyncio.create_task(pump(proc.stderr, outcome.stderr)),  # type: ignore[arg-type]
        ]
        if proc.stdin:
            tasks.append(asyncio.create_task(feed(proc.stdin, stage.stdin)))
        capped = asyncio.create_task(over_cap.wait())
        try:
            done, _ = await asyncio.wait(
                {self.outer_exited, capped}, timeout=stage.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if self.outer_exited not in done:
                outcome.timed_out = not over_cap.is_set()
            await self.close()  # kills what is left; returns once every process is gone
            # Every writer is dead now, so the pipes reach EOF promptly.
            await asyncio.wait(tasks, timeout=_KILL_GRACE_S)
        finally:
            for t in (*tasks, capped):
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, capped, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # the transport has seen EOF everywhere: let it finish
            await asyncio.wait_for(proc.wait(), _KILL_GRACE_S)
        rc = proc.returncode
        if rc is not None and not outcome.timed_out and not outcome.output_capped:
            outcome.returncode = 128 - rc if rc < 0 else rc
            outcome.cpu_limited = outcome.returncode == 128 + signal.SIGXCPU

    async def close(self) -> None:
        """Kill whatever still runs and return only when all of it is gone (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc is not None:
                await self._close_tree()
        finally:
            self._stop_info()
            loop = asyncio.get_running_loop()
            for fd in self._watched:
                loop.remove_reader(fd)
            self._watched.clear()
            for fd in self._pidfds:
                os.close(fd)
            self._pidfds.clear()

    async def _close_tree(self) -> None:
        proc, outer_exited = self.proc, self.outer_exited
        assert proc is not None and outer_exited is not None
        if not self.isolated:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await self._wait_outer()
            # No pid namespace: detached children may remain.
            await kill_uid_processes(proc, self.stage.uid, self.host.kill_binary)
            return
        if not outer_exited.done():
            await self._kill_init()
        await self._wait_outer()
        # The outer may have exited before we read its report: collect it now.
        if self._info_done is not None and not self._info_done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._info_done), _KILL_GRACE_S)
        if self.init_exited is None:
            await kill_uid_processes(proc, self.stage.uid, self.host.kill_binary)  # never saw pid 1: be thorough
            return
        for attempt in range(2):
            try:
                await asyncio.wait_for(asyncio.shield(self.init_exited), _KILL_GRACE_S)
                break
            except TimeoutError:
                if self.init_pidfd is not None:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
                if attempt:
                    await kill_uid_processes(proc, self.stage.uid, self.host.kill_binary)
        if self.init_pidfd is not None:
            reap_pidfd(self.init_pidfd)  # ours as subreaper: reap it

    async def _kill_init(self) -> None:
        proc = self.proc
        assert proc is not None
        if self.init_exited is None and self._info_done is not None and not self._info_done.done():
            with contextlib.suppress(TimeoutError):  # bwrap writes it within milliseconds of starting
                await asyncio.wait_for(asyncio.shield(self._info_done), 1.0)
        if self.init_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _wait_outer(self) -> None:
        proc, outer_exited = self.proc, self.outer_exited
        assert proc is not None and outer_exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(outer_exited), _KILL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(outer_exited)
        for _ in range(1000):  # the child watcher reaps it and sets the code right after
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.001)


def in_fresh_loop(fn: Callable[[], object]):
    """Run an async function to completion in a new loop on a new thread (safe from any caller)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(fn())  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="execution-probe")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
