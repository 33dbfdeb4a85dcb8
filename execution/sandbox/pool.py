"""How many runs go at once, and who goes next: a bounded queue, fair across clients, with a wait limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass

from execution.sandbox.run import box_shape, run_code
from execution.sandbox.spares import Spares
from execution.sandbox.types import ExecutionResult, Limits, SandboxConfig


class QueueFull(Exception):
    """Raised by ExecutionPool.run when a run cannot be queued, or waited longer than allowed."""


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    key: str
    address: str


class ExecutionPool:
    """At most `max_concurrent` runs at once; the others wait, at most `max_wait_s`, in a queue
    of `max_queue` (of which one client key, or one address, may hold `max_queue_per_client`).

    The queue is fair: each client key (a session, or an address for runs outside any session)
    has its own line, and a freed slot goes to the next key in turn, so one session flooding
    runs does not delay another's single run by more than one run per key ahead of it.
    Loop-agnostic: waiters are futures of the loop that awaits them, so one pool serves one
    event loop at a time (the ASGI server's), and tests may create their own.
    """

    def __init__(
        self,
        max_concurrent: int,
        max_queue: int,
        *,
        max_queue_per_client: int | None = None,
        max_wait_s: float = 10.0,
        spares: Spares | None = None,
    ) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.max_concurrent, self.max_queue, self.max_wait_s = max_concurrent, max_queue, max_wait_s
        self.max_queue_per_client = max_queue if max_queue_per_client is None else max_queue_per_client
        self.spares = spares
        self._active = 0
        self._lines: OrderedDict[str, deque[_Waiter]] = OrderedDict()  # in turn order
        self._per_address: dict[str, int] = {}
        self._queued = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return self._queued

    async def run(self, *, key: str = "", address: str = "", **kwargs) -> ExecutionResult:
        """run_code(**kwargs) once a slot is free; QueueFull if it cannot queue or waits too long."""
        await self._acquire(key or address, address)
        try:
            return await run_code(spares=self.spares, **kwargs)
        finally:
            self._release()

    def warm(self, *, languages: list[str], limits: Limits, config: SandboxConfig) -> None:
        """Start building the spare sandboxes of these languages (no-op without spares)."""
        if self.spares is None:
            return
        for language in languages:
            shape = box_shape(language, limits, config)
            if shape is not None:
                self.spares.replenish(shape)

    async def close(self) -> None:
        """Destroy the spare sandboxes (the pool still runs programs, building each box itself)."""
        if self.spares is not None:
            spares, self.spares = self.spares, None
            await spares.close()

    async def _acquire(self, key: str, address: str) -> None:
        if self._active < self.max_concurrent and not self._queued:
            self._active += 1
            return
        line = self._lines.get(key)
        if self._queued >= self.max_queue:
            raise QueueFull(f"{self._active} runs active and {self._queued} queued")
        if (line and len(line) >= self.max_queue_per_client) or (
            self._per_address.get(address, 0) >= self.max_queue_per_client
        ):
            raise QueueFull(f"{self.max_queue_per_client} runs of this client already queued")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), key, address)
        if line is None:
            line = self._lines[key] = deque()
        line.append(waiter)
        self._queued += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        timer = loop.call_later(self.max_wait_s, self._expire, waiter)
        try:
            await waiter.future  # _release hands its slot over; _expire says the wait ran out
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release()  # the slot was handed to us just as we were cancelled
            else:
                self._forget(waiter)
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: _Waiter) -> None:
        if not waiter.future.done():
            self._forget(waiter)
            waiter.future.set_exception(QueueFull(f"waited {self.max_wait_s:g} s for a free slot"))

    def _forget(self, waiter: _Waiter) -> None:
        """Take a waiter out of the queue (handed a slot, timed out or cancelled)."""
        line = self._lines.get(waiter.key)
        if line is None:
            return
        with contextlib.suppress(ValueError):
            line.remove(waiter)
            self._queued -= 1
            left = self._per_address[waiter.address] - 1
            if left:
                self._per_address[waiter.address] = left
            else:
                del self._per_address[waiter.address]
        if not line:
            del self._lines[waiter.key]

    def _release(self) -> None:
        """Hand the slot to the first waiter of the next key in turn, or free it."""
        while self._lines:
            key, line = next(iter(self._lines.items()))
            waiter = line[0]
            self._forget(waiter)
            if key in self._lines:
                self._lines.move_to_end(key)  # its next run waits for the other keys' turns
            if not waiter.future.done():
                waiter.future.set_result(None)
                return
        self._active -= 1
