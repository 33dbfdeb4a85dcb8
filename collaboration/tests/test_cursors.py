"""Cursor debounce: stored once per interval, the latest cursor winning."""

import asyncio

from collaboration.cursors import CursorDebounce


class TestCursorDebounce:
    async def test_stores_only_the_latest_cursor_of_an_interval(self):
        """Three moves within the interval are one store, of the last position."""
        stored = []

        async def store(cursor):
            stored.append(cursor)

        debounce = CursorDebounce(store, interval=0.02)
        for column in range(3):
            debounce.update({"line": 0, "column": column})
        await asyncio.sleep(0.1)
        assert stored == [{"line": 0, "column": 2}]

    async def test_flush_stores_at_once_and_only_once(self):
        """flush stores the pending cursor now; the timer then finds nothing to store."""
        stored = []

        async def store(cursor):
            stored.append(cursor)

        debounce = CursorDebounce(store, interval=0.02)
        debounce.update({"line": 1, "column": 1})
        await debounce.flush()
        await asyncio.sleep(0.05)
        assert stored == [{"line": 1, "column": 1}]
