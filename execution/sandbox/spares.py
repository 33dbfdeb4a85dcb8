"""A run's sandboxes, built before its program is known; and a stock of them built ahead of time.

A `Box` is everything one run executes in: a uid of its own, a fresh run directory, and one
started sandbox per stage (compile and run, or run alone), each with its cgroup and a shell
waiting in it for the command (`process.StageProcess`). Building it is most of a run's cost
that does not depend on the program (bwrap's namespaces and mounts, the cgroups, the uid,
the directory); so `Spares` keeps a few boxes per shape built and waiting, hands one to a
run, and builds its replacement once that run is over. Each box serves exactly one run and
is destroyed after it, with every process, file and cgroup of it: nothing of a run is
there for the next, which gets a box that was never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from execution.sandbox.host.setup import Host
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.host.uids import uid_take
from execution.sandbox.languages import Context, Language
from execution.sandbox.process import SHELL, WAITING_STUB, Stage, StageProcess, uncancellable
from execution.sandbox.types import Limits
from execution.sandbox.workdir import Workdir, make_workdir, remove_workdir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoxShape:
    """What a run's sandboxes are built from before its program is known (a spare's key)."""

    language: Language
    limits: Limits
    compile_binds: tuple[tuple[str, str], ...] = ()  # (host file, path inside), read-only, compile stage
    host: Host = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    toolchain: Toolchain = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    context: Context = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def stage(self, workdir: Workdir, uid: int | None, *, compiling: bool) -> Stage:
        """The compile or the run stage: the same sandbox, each with the limits of its kind."""
        limits = self.limits
        if compiling:
            timeout_s, memory_mb = limits.compile_timeout_s, limits.compile_memory_mb
            nproc, nofile, binds = max(limits.max_processes, 64), max(limits.open_files, 256), self.compile_binds
        else:
            timeout_s, memory_mb = limits.timeout_s, limits.memory_mb
            nproc, nofile, binds = limits.max_processes, limits.open_files, ()
        # The run stage may wait in the language's own process (Python's interpreter).
        waiting = getattr(self.language, "waiting", None)
        return Stage(
            cmd=WAITING_STUB,
            toolchain=self.toolchain,
            timeout_s=timeout_s,
            limits=limits,
            memory_kind=self.language.MEMORY_KIND,
            memory_mb=memory_mb,
            nproc=nproc,
            nofile=nofile,
            env=self.language.ENV,
            stdin=b"",
            workdir=workdir,
            uid=uid,
            extra_binds=binds,
            waiting=waiting(self.toolchain) if waiting is not None and not compiling else SHELL,
        )


@dataclass
class Box:
    """One run's uid, run directory and started sandboxes; `close` destroys all of it."""

    host: Host
    uid: int | None
    workdir: Workdir
    run: StageProcess | None = None
    compile: StageProcess | None = None
    _closed: bool = False

    @property
    def alive(self) -> bool:
        """Every sandbox of it started and still waiting for its program."""
        stages = [s for s in (self.compile, self.run) if s is not None]
        return bool(stages) and all(s.alive for s in stages)

    async def close(self) -> None:
        """Kill every process of the box, remove its cgroups and directory, free its uid (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for stage in (self.compile, self.run):
                if stage is not None:
                    await stage.close()
            await asyncio.to_thread(remove_workdir, self.workdir)
        finally:
            if self.uid is not None and self.host.uids is not None:
                self.host.uids.release(self.uid)


async def box_open(shape: BoxShape) -> Box:
    """A box of this shape: its uid, directory and sandboxes started (raises OSError if the
    directory cannot be made; a sandbox that fails to start says so when it is given its program)."""
    host = shape.host
    uid = await uid_take(host.uids)
    try:
        limits = shape.limits
        workdir = make_workdir(
            host.work_root,
            None,
            "",
            uid,
            tmpfs=host.run_fs,
            size_bytes=limits.disk_mb << 20,
            inodes=limits.disk_inodes,
        )
    except BaseException:
        if uid is not None and host.uids is not None:
            host.uids.release(uid)
        raise
    box = Box(host, uid, workdir)
    try:
        if shape.language.COMPILED:
            box.compile = StageProcess(host, shape.stage(workdir, uid, compiling=True))
            await box.compile.start()
        box.run = StageProcess(host, shape.stage(workdir, uid, compiling=False))
        await box.run.start()
    except BaseException:
        await uncancellable(box.close())
        raise
    return box


class Spares:
    """Up to `count` boxes per shape built ahead of time, for the `max_shapes` shapes used last.

    Every run of a shape takes a spare if one is ready (or builds its box itself), and once
    it is over, `replenish` builds what the stock lacks. A spare's sandboxes are built with
    the CPU limit of the longest run (`max_timeout_s`); each run's own command lowers it to
    that run's before it starts. Loop-bound like the pool: one event loop uses it.
    """

    def __init__(self, count: int, *, max_timeout_s: float, max_shapes: int = 8) -> None:
        self.count, self.max_timeout_s, self.max_shapes = max(0, count), max_timeout_s, max(1, max_shapes)
        self._ready: OrderedDict[BoxShape, deque[Box]] = OrderedDict()
        self._building: dict[BoxShape, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._changed: asyncio.Condition | None = None  # notified when a build ends

    def key(self, shape: BoxShape) -> BoxShape:
        """The shape spares of it are built with: the same, with the longest run's time limit."""
        return dataclasses.replace(shape, limits=dataclasses.replace(shape.limits, timeout_s=self.max_timeout_s))

    def ready(self, shape: BoxShape) -> int:
        """Spares ready for this shape now."""
        return sum(1 for box in self._ready.get(self.key(shape), ()) if box.alive)

    def ready_by_language(self) -> dict[str, int]:
        """Spares ready now, per language (every shape of it), for /health."""
        counts: dict[str, int] = {}
        for shape, boxes in list(self._ready.items()):
            name = shape.language.NAME
            counts[name] = counts.get(name, 0) + sum(1 for box in list(boxes) if box.alive)
        return counts

    async def wait_built(self, shape: BoxShape, count: int | None = None) -> None:
        """Until `count` (default: all) spares of this shape are ready and none is being built."""
        wanted = self.count if count is None else count
        key = self.key(shape)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self.ready(shape) >= wanted and not self._building.get(key))

    def take(self, shape: BoxShape) -> Box | None:
        """A ready spare for this shape (never used, still waiting), or None."""
        if self.count == 0 or shape.limits.timeout_s > self.max_timeout_s:
            return None
        key = self.key(shape)
        stock = self._ready.get(key)
        if stock is None:
            return None
        self._ready.move_to_end(key)
        while stock:
            box = stock.popleft()
            if box.alive:
                return box
            self._spawn(box.close())  # died while waiting (killed from outside, a failed start)
        return None

    def replenish(self, shape: BoxShape) -> None:
        """Build, in the background, the spares this shape lacks."""
        if self.count == 0 or self._closed or shape.limits.timeout_s > self.max_timeout_s:
            return
        key = self.key(shape)
        stock = self._ready.setdefault(key, deque())
        self._ready.move_to_end(key)
        while len(self._ready) > self.max_shapes:  # shapes not used for longest: give their spares back
            _old, boxes = self._ready.popitem(last=False)
            for box in boxes:
                self._spawn(box.close())
        for _ in range(self.count - len(stock) - self._building.get(key, 0)):
            self._building[key] = self._building.get(key, 0) + 1
            self._spawn(self._build(key))

    async def _build(self, key: BoxShape) -> None:
        try:
            try:
                box = await box_open(key)
            except OSError as exc:
                logger.warning("could not build a spare sandbox: %s", exc)
                return
            finally:
                self._building[key] -= 1
            stock = self._ready.get(key)
            if self._closed or stock is None or len(stock) >= self.count:
                await box.close()
            else:
                stock.append(box)
        finally:
            if self._changed is not None:
                async with self._changed:
                    self._changed.notify_all()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Destroy every spare and wait for the ones being built (then destroy those too)."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        boxes = [box for stock in self._ready.values() for box in stock]
        self._ready.clear()
        for box in boxes:
            with contextlib.suppress(Exception):
                await box.close()
