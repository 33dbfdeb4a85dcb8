"""One database call for the requests of many connections: what a fleet of clients asks
at once (a thousand reconnecting after a deploy, fifty joining a batch of sessions) costs
one thread hop and one transaction per batch, not per connection.

A `Batcher` wraps a synchronous function of a list of requests that returns one result
per request, in order (an exception instance is that request's error). Requests made in
one turn of the event loop, and those made while a batch is in the database, go together
in the next batch, at most `limit` at a time; batches run one after another, so requests
are applied in the order they were made. At low load a batch holds one request and
costs what a direct call did.
"""

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)


class _Queue:
    __slots__ = ("pending", "task")

    def __init__(self):
        self.pending: deque[tuple[object, asyncio.Future]] = deque()
        self.task: asyncio.Task | None = None


class Batcher:
    def __init__(self, run: Callable[[list], Sequence], *, limit: int = 100, executor=None):
        self.run = run
        self.limit = limit
        if executor is None:
            self.call = database_sync_to_async(run)
        else:
            self.call = database_sync_to_async(run, thread_sensitive=False, executor=executor)
        # One queue per event loop (each test server, each thread's loop has its own).
        self.queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def __call__(self, request):
        loop = asyncio.get_running_loop()
        queue = self.queues.get(loop)
        if queue is None:
            queue = self.queues[loop] = _Queue()
        future = loop.create_future()
        queue.pending.append((request, future))
        if queue.task is None:
            queue.task = loop.create_task(self.drain(queue))
        return await future

    async def drain(self, queue: _Queue) -> None:
        batch: list[tuple[object, asyncio.Future]] = []
        try:
            while queue.pending:
                batch = [queue.pending.popleft() for _ in range(min(self.limit, len(queue.pending)))]
                requests = [request for request, _ in batch]
                try:
                    results = await self.call(requests)
                except Exception as exc:
                    if len(batch) == 1:
                        results = [exc]
                    else:
                        # One bad request must not fail the others: each again, alone.
                        logger.exception("A batch of %d requests failed; retrying them one by one", len(batch))
                        results = [await self.alone(request) for request in requests]
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            # The loop is closing: nobody is left to answer.
            for _, future in [*batch, *queue.pending]:
                future.cancel()
            queue.pending.clear()
            raise
        finally:
            queue.task = None

    async def alone(self, request):
        try:
            (result,) = await self.call([request])
        except Exception as exc:
            return exc
        return result
