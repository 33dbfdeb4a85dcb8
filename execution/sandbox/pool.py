"""Bounds how many runs go at once and how many wait; the rest are refused with QueueFull."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from execution.sandbox.run import run_code
from execution.sandbox.types import ExecutionResult


class QueueFull(Exception):
    """Raised by ExecutionPool.run when every slot is busy and the queue is full."""


class ExecutionPool:
    """Bounds concurrent runs (max_concurrent) and waiting runs (max_queue); the rest get QueueFull.

    Loop-agnostic: waiters are futures of the loop that awaits them, so one pool may serve
    one event loop at a time (the ASGI server's), and tests may create their own.
    """

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def run(self, **kwargs) -> ExecutionResult:
        """run_code(**kwargs) once a slot is free; QueueFull at once if the queue is full."""
        await self._acquire()
        try:
            return await run_code(**kwargs)
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(f"{self._active} runs active and {len(self._waiters)} queued")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _release handed its slot over (active count unchanged)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed to us just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1
