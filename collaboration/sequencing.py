"""Ordered delivery: one connection's versioned frames go out strictly in version order.

Several processes publish a session's changes, so a connection may receive version 8
before version 7. A frame ahead of its turn waits; when the gap closes, the waiting
frames go out in order. Two things end in a resync (the decision is here; the consumer
reads the document and tells the client):

- a gap that stays open for GAP_TIMEOUT_SECONDS: a change was lost in transit;
- a client that falls behind: more than `backlog_limit` bytes it was sent are still
  waiting for it to read them. Every code-update carries the whole document, so sending
  it the rest would only grow the backlog: versioned frames are skipped until it has read
  what it holds, and then one RESYNC_REQUIRED with the current document brings it back.

While the consumer reads the document for a resync, frames are held (not sent), so none
can go out before the resync that would make the client skip it.
"""

import asyncio
from collections.abc import Callable

# How long a later version may wait for an earlier one before the client must resync.
GAP_TIMEOUT_SECONDS = 3.0


class OrderedDelivery:
    """The versioned frames of one connection, sent in version order.

    `send` writes one frame's text (synchronously: to the socket, or to an outbox its owner
    flushes); `on_gap` is called (from the event loop) when a gap outlived
    GAP_TIMEOUT_SECONDS while frames still wait behind it. With `backlog` (the bytes the
    socket holds unread), `on_behind` is called once the backlog passes `backlog_limit`,
    with the bytes skipped so far, and again with each frame skipped after.
    """

    def __init__(
        self,
        send: Callable[[str], object],
        on_gap: Callable[[], None],
        *,
        backlog: Callable[[], int] | None = None,
        backlog_limit: int = 0,
        on_behind: Callable[[int], None] | None = None,
    ):
        self.send = send
        self.on_gap = on_gap
        self.backlog = backlog
        self.backlog_limit = backlog_limit
        self.on_behind = on_behind
        # The version the client must get next; everything before it, it has.
        self.next_version = 0
        # Frames that arrived ahead of their turn (or while held), by version.
        self.waiting_versions: dict[int, str] = {}
        self.gap_timer: asyncio.TimerHandle | None = None
        # Skipping frames until the client has read its backlog (then `hold` and resync).
        self.behind = False
        self.skipped_bytes = 0
        # Holding frames while a resync reads the document.
        self.held = False

    def start_after(self, version: int) -> None:
        """The client holds the document at `version` (from welcome or a resync): older
        frames are skipped, waiting ones up to it dropped, and held ones released."""
        self.waiting_versions = {v: text for v, text in self.waiting_versions.items() if v > version}
        self.next_version = version + 1
        self.behind = False
        self.skipped_bytes = 0
        self.held = False
        self._flush()

    def hold(self) -> None:
        """Keep frames back until `start_after` (a resync is reading the document)."""
        self.held = True
        self.behind = False

    def deliver(self, version: int, text: str) -> None:
        """Send `text` when its turn comes, with whatever waited behind it."""
        if version < self.next_version:
            return
        if self.behind:
            self.skipped_bytes += len(text)
            self.on_behind(self.skipped_bytes)
            return
        self.waiting_versions[version] = text
        if not self.held:
            self._flush()

    def _flush(self) -> None:
        waiting = self.waiting_versions
        if self.backlog is not None and self.next_version in waiting and self.backlog() > self.backlog_limit:
            self.behind = True
            self.skipped_bytes = sum(len(text) for text in waiting.values())
            waiting.clear()
            self._cancel_gap_timer()
            self.on_behind(self.skipped_bytes)
            return
        while self.next_version in waiting:
            self.send(waiting.pop(self.next_version))
            self.next_version += 1
        if waiting and self.gap_timer is None:
            self.gap_timer = asyncio.get_running_loop().call_later(GAP_TIMEOUT_SECONDS, self._gap_expired)
        elif not waiting:
            self._cancel_gap_timer()

    def _cancel_gap_timer(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def _gap_expired(self) -> None:
        self.gap_timer = None
        if self.waiting_versions and not self.held and not self.behind:
            self.on_gap()

    def stop(self) -> None:
        self._cancel_gap_timer()
