"""Cursor debounce: a connection's cursor is broadcast at once but stored at most once per
interval, the latest one winning."""

import asyncio
from collections.abc import Awaitable, Callable


class CursorDebounce:
    """Holds the latest cursor and stores it `interval` seconds after the first unsaved one."""

    def __init__(self, store: Callable[[dict], Awaitable[None]], *, interval: float):
        self.store = store
        self.interval = interval
        self.pending: dict | None = None
        self.task: asyncio.Task | None = None

    def update(self, cursor: dict) -> None:
        self.pending = cursor
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._store_later())

    async def _store_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()

    async def flush(self) -> None:
        """Store the pending cursor now, if there is one."""
        cursor, self.pending = self.pending, None
        if cursor is not None:
            await self.store(cursor)
