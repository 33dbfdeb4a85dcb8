"""Running one stage: start it, feed stdin, capture output up to the cap, enforce wall time, kill and reap."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import resource
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from execution.sandbox.bwrap import BASE_ENV, bwrap_argv, cgroup_limits, cpu_limit, rlimits
from execution.sandbox.host.cgroups import StageCgroup
from execution.sandbox.host.reaper import kill_uid_processes
from execution.sandbox.host.seccomp import open_for_stage
from execution.sandbox.host.spawner import Attach, Request, spawner_for
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.host.uids import uid_slot
from execution.sandbox.types import Limits, default_python
from execution.sandbox.workdir import Workdir

if TYPE_CHECKING:
    from execution.sandbox.host.setup import Host

_KILL_GRACE_S = 5.0


# What a started sandbox runs until its program is known: a shell that reads one line (the
# command, from the server) and evals it; dash's `read` takes one byte at a time from a pipe,
# so the rest of stdin is left, untouched, for the program.
WAITING_STUB = ["/bin/sh", "-c", 'IFS= read -r line || exit 0; eval "$line"']


@dataclass(frozen=True)
class Waiting:
    """What a started sandbox runs until its program is known (`argv`), and the one line
    (`line(cmd, soft, hard)`) that starts the program with its CPU limit lowered to the run's."""

    argv: list[str]
    line: Callable[[list[str], int, int], str]


def _shell_line(cmd: list[str], soft: int, hard: int) -> str:
    return f"unset PWD; ulimit -S -t {soft}; ulimit -H -t {hard}; exec {shlex.join(cmd)}\n"


SHELL = Waiting(WAITING_STUB, _shell_line)


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
    # What waits in the sandbox until `go`: a shell, or a language's own (Python's interpreter).
    waiting: Waiting = SHELL


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
    """Start a stage, run its command at once, and return only once every process of it is gone."""
    sandbox = StageProcess(host, stage)
    try:
        await sandbox.start()
        return await sandbox.go(stage.cmd, stage.stdin, stage.timeout_s)
    finally:
        await uncancellable(sandbox.close())  # also on cancellation


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


@dataclass
class _Outer:
    """The stage's outer process (bwrap, or the program itself without namespaces): a child of
    the spawner, its exit code reported by it."""

    pid: int
    returncode: int | None = None


class StageProcess:
    """One stage's process tree: the outer process, the sandbox's pid 1, and everything below.

    It is started before its program is known (``start``: the sandbox is built, its cgroup
    made, and a shell waits in it), then given the program once (``go``: the shell lowers the
    CPU limit to the run's and execs it; stdin follows), then destroyed (``close``). A
    started stage may wait for its program as long as it likes: that is how sandboxes are
    made ahead of time (``spares.py``).

    The outer process is started by the spawner (``host/spawner.py``), which reports its exit
    code through a pipe; the pipes to the program are asyncio pipe transports, so a detached
    child still holding stdout never delays seeing the exit.

    bwrap's outer process exits as soon as its init reports the program's exit status,
    without reaping that init; the orphaned init goes to the spawner (a subreaper, which
    reaps it), and close() waits on the init's pidfd until it is dead (the kernel lets a
    pid namespace's init die only once every other process in the namespace is gone).
    """

    def __init__(self, host: Host, stage: Stage) -> None:
        self.host, self.stage = host, stage
        self.isolated = host.config.mode == "bwrap"  # never run unsandboxed unless configured so
        self.cgroup: StageCgroup | None = None
        self.start_error: str | None = None
        self._cpu: tuple[int, int] = (0, 0)  # RLIMIT_CPU (soft, hard) the stage was started with
        self._used = False
        self.proc: _Outer | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self._readers: list[asyncio.StreamReader] = []  # stdout, stderr
        self._transports: list[asyncio.BaseTransport] = []
        self._pidfds: list[int] = []
        self._watched: list[int] = []
        self.outer_exited: asyncio.Future[None] | None = None
        self.init_pidfd: int | None = None
        self.init_exited: asyncio.Future[None] | None = None
        self._info_fd: int | None = None
        self._info = bytearray()
        self._info_done: asyncio.Future[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Build the sandbox with its waiting shell; a failure is kept in ``start_error``."""
        if self.host.cgroups:
            try:
                self.cgroup = StageCgroup(self.host.cgroups, **cgroup_limits(self.stage))
            except OSError:
                self.cgroup = None  # a full or vanished hierarchy: rlimits still apply
        try:
            await self._spawn()
        except (OSError, subprocess.SubprocessError) as exc:
            self.start_error = f"could not start the sandbox: {exc}"

    @property
    def alive(self) -> bool:
        """Started, not yet given a program, and still waiting for one."""
        return self.proc is not None and not self._used and not (self.outer_exited and self.outer_exited.done())

    async def _spawn(self) -> None:
        stage, host = self.stage, self.host
        loop = asyncio.get_running_loop()
        stage = dataclasses.replace(stage, cmd=stage.waiting.argv)
        mine: list[int] = []  # the server's ends
        theirs: list[int] = []  # the child's ends: closed here once it has them
        started: list[int] = []
        try:
            extra: tuple[tuple[int, int], ...] = ()
            if self.isolated:
                self._info_fd, info_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                os.set_blocking(info_w, True)
                theirs.append(info_w)
                filter_fd = None
                if host.seccomp_fd is not None:
                    filter_fd = open_for_stage(host.seccomp_fd)
                    theirs.append(filter_fd)
                extra = tuple((fd, fd) for fd in (info_w, filter_fd) if fd is not None)
                argv = bwrap_argv(host, stage, info_fd=info_w, seccomp_fd=filter_fd)
                cwd, env = None, {"PATH": "/usr/bin:/bin"}
            else:
                argv, cwd = stage.cmd, stage.workdir.path if stage.workdir is not None else host.work_root
                env = {**BASE_ENV, "TMPDIR": cwd, "HOME": cwd, **stage.env}
            attach = None
            workdir = stage.workdir
            if self.isolated and workdir is not None and workdir.fs_fd is not None:
                attach = Attach(workdir.fs_fd, workdir.path, workdir.userns_fd)
            pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]  # stdin, stdout, stderr
            status_r, status_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            mine += [pipes[0][1], pipes[1][0], pipes[2][0], status_r]
            theirs += [pipes[0][0], pipes[1][1], pipes[2][1], status_w]
            limits = rlimits(stage, host)
            self._cpu = next((soft, hard) for res, soft, hard in limits if res == resource.RLIMIT_CPU)
            request = Request(
                argv=argv,
                env=env,
                cwd=cwd,
                rlimits=limits,
                uid=stage.uid,
                stdio=(pipes[0][0], pipes[1][1], pipes[2][1]),
                status_w=status_w,
                extra=extra,
                cgroup_fds=tuple(self.cgroup.procs_fds) if self.cgroup else (),
                mntns_fd=host.mntns_fd,
                attach=attach,
            )
            # Started by the spawner: a fork of this (large) server with its set-up before
            # exec took 7-15 ms and held the GIL, stalling every other request meanwhile.
            spawner = spawner_for(default_python())
            await uncancellable(asyncio.to_thread(lambda: started.append(spawner.spawn(request))))
            pid = started[0]
        except BaseException:
            if started:  # cancelled while it started: take it down (bwrap's init dies with its parent)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(started[0], signal.SIGKILL)
            for fd in mine:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.proc = _Outer(pid)
        self.outer_exited = self._watch_status(status_r)
        if self._info_fd is not None:
            self._info_done = loop.create_future()
            loop.add_reader(self._info_fd, self._on_info)
        for fd in (pipes[1][0], pipes[2][0]):
            reader = asyncio.StreamReader(limit=1 << 16)
            pipe = os.fdopen(fd, "rb", buffering=0)
            transport, _ = await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), pipe)
            self._readers.append(reader)
            self._transports.append(transport)
        pipe = os.fdopen(pipes[0][1], "wb", buffering=0)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
        self._transports.append(transport)
        self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)

    def _watch_status(self, status_r: int) -> asyncio.Future[None]:
        """Done when the spawner reports the outer process's exit (its code becomes `returncode`)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        text = bytearray()

        def ready() -> None:
            try:
                chunk = os.read(status_r, 64)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                text.extend(chunk)
                return
            loop.remove_reader(status_r)  # EOF: written and closed (or the spawner died: no code)
            os.close(status_r)
            with contextlib.suppress(ValueError):
                assert self.proc is not None
                self.proc.returncode = int(text)
            if not done.done():
                done.set_result(None)

        loop.add_reader(status_r, ready)
        return done

    def _watch_exit(self, pid: int) -> asyncio.Future[None]:
        """A future done when `pid` exits (or is already gone); no parenthood needed."""
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

    async def go(self, cmd: list[str], stdin: bytes, timeout_s: float) -> Outcome:
        """Run `cmd` in the started sandbox for at most `timeout_s`; returns once every process is gone."""
        outcome = Outcome()
        if self._used or self._closed:
            raise RuntimeError("a sandbox runs one program only, before it is closed")
        self._used = True
        if self.start_error is not None or self.proc is None:
            outcome.start_error = self.start_error or "the sandbox was not started"
            return outcome
        soft, hard = cpu_limit(timeout_s)
        soft, hard = min(soft, self._cpu[0]), min(hard, self._cpu[1])
        line = self.stage.waiting.line(cmd, soft, hard)
        started = time.monotonic()
        await self.supervise(outcome, line.encode() + stdin, timeout_s)
        outcome.elapsed_s = time.monotonic() - started
        if self.cgroup and self.cgroup.oom_killed():
            outcome.oom_killed = True
        return outcome

    async def supervise(self, outcome: Outcome, stdin: bytes, timeout_s: float) -> None:
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

        stdout, stderr = self._readers
        tasks = [
            asyncio.create_task(pump(stdout, outcome.stdout)),
            asyncio.create_task(pump(stderr, outcome.stderr)),
        ]
        if self.stdin is not None:
            tasks.append(asyncio.create_task(feed(self.stdin, stdin)))
        capped = asyncio.create_task(over_cap.wait())
        try:
            done, _ = await asyncio.wait(
                {self.outer_exited, capped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
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
        rc = proc.returncode  # reaped when it exited (close waited for that)
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
                if self.stdin is not None and not self._used:
                    self.stdin.close()  # a sandbox never given a program: its shell reads EOF
                await self._close_tree()
        finally:
            for transport in self._transports:
                transport.close()
            self._transports.clear()
            if self.cgroup:
                self.cgroup.close()
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
            await self._sweep()
            return
        if not outer_exited.done():
            await self._kill_init()
        await self._wait_outer()
        # The outer may have exited before we read its report: collect it now.
        if self._info_done is not None and not self._info_done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._info_done), _KILL_GRACE_S)
        if self.init_exited is None:
            await self._sweep()  # never saw pid 1: be thorough
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
                    await self._sweep()

    async def _sweep(self) -> None:
        """Kill every process of the run's uid (a stage whose pid 1 was not seen, or without
        namespaces); the uid is checked again for leftovers before it is handed out next."""
        if self.host.uids is not None and self.stage.uid is not None:
            self.host.uids.suspect(self.stage.uid)
        assert self.proc is not None
        await kill_uid_processes(self.proc, self.stage.uid, self.host.kill_binary)

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
