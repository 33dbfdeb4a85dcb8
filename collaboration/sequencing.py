"""Ordered delivery: one connection's versioned frames go out strictly in version order.

Several processes publish a session's changes, so a connection may receive version 8
before version 7. A frame ahead of its turn waits; when the gap closes, the waiting
frames go out in order. A gap that stays open for GAP_TIMEOUT_SECONDS means a change was
lost in transit: the connection must resync (the decision is here; the consumer reads the
document and tells the client).
"""

import asyncio
from collections.abc import Awaitable, Callable

# How long a later version may wait for an earlier one before the client must resync.
GAP_TIMEOUT_SECONDS = 3.0


class OrderedDelivery:
    """The versioned frames of one connection, sent in version order.

    `send` sends one frame's text; `on_gap` is called (from the event loop, not awaited)
    when a gap outlived GAP_TIMEOUT_SECONDS while frames still wait behind it.
    """

    def __init__(self, send: Callable[[str], Awaitable[None]], on_gap: Callable[[], None]):
        self.send = send
        self.on_gap = on_gap
        # The version the client must get next; everything before it, it has.
        self.next_version = 0
        # Frames that arrived ahead of their turn, by version.
        self.waiting_versions: dict[int, str] = {}
        self.gap_timer: asyncio.TimerHandle | None = None

    def start_after(self, version: int) -> None:
        """The client holds the document at `version` (from welcome or a resync): older
        frames are skipped and waiting ones up to it dropped."""
        self.waiting_versions = {v: text for v, text in self.waiting_versions.items() if v > version}
        self.next_version = version + 1

    async def deliver(self, version: int, text: str) -> None:
        """Send `text` when its turn comes, with whatever waited behind it."""
        if version < self.next_version:
            return
        self.waiting_versions[version] = text
        while self.next_version in self.waiting_versions:
            await self.send(self.waiting_versions.pop(self.next_version))
            self.next_version += 1
        if self.waiting_versions and self.gap_timer is None:
            self.gap_timer = asyncio.get_running_loop().call_later(GAP_TIMEOUT_SECONDS, self._gap_expired)
        elif not self.waiting_versions and self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def _gap_expired(self) -> None:
        self.gap_timer = None
        if self.waiting_versions:
            self.on_gap()

    def stop(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
