"""Ordered delivery without a server: frames out in version order, gaps end in a resync."""

import asyncio

from collaboration import sequencing
from collaboration.sequencing import OrderedDelivery


class Recorded(OrderedDelivery):
    """An OrderedDelivery that records what it sends (`sent`) and each resync asked (`gaps`)."""

    def __init__(self):
        self.sent: list[str] = []
        self.gaps = 0
        super().__init__(self.record, self.gap)

    def record(self, text: str) -> None:
        self.sent.append(text)

    def gap(self) -> None:
        self.gaps += 1


class TestOrderedDelivery:
    async def test_frames_out_of_order_go_out_in_version_order(self):
        """Version 3 waits for 2; once 2 comes, both go out, in order."""
        delivery = Recorded()
        delivery.start_after(1)
        delivery.deliver(3, "three")
        assert delivery.sent == []
        assert delivery.waiting_versions == {3: "three"}
        delivery.deliver(2, "two")
        assert delivery.sent == ["two", "three"]
        assert delivery.waiting_versions == {}
        assert delivery.gap_timer is None

    async def test_versions_the_client_holds_are_skipped(self):
        """A frame for a version at or before the welcome's is not sent again."""
        delivery = Recorded()
        delivery.start_after(5)
        delivery.deliver(5, "five")
        assert delivery.sent == []

    async def test_a_gap_that_stays_open_asks_for_a_resync(self, monkeypatch):
        """A frame still waiting after GAP_TIMEOUT_SECONDS calls on_gap once."""
        monkeypatch.setattr(sequencing, "GAP_TIMEOUT_SECONDS", 0.01)
        delivery = Recorded()
        delivery.deliver(2, "two")
        await asyncio.sleep(0.05)
        assert delivery.gaps == 1
        assert delivery.sent == []

    async def test_a_resync_drops_what_the_document_already_holds(self):
        """start_after a resync keeps only the waiting frames beyond the new version."""
        delivery = Recorded()
        delivery.deliver(2, "two")
        delivery.deliver(4, "four")
        delivery.start_after(2)
        assert delivery.waiting_versions == {4: "four"}
        delivery.deliver(3, "three")
        assert delivery.sent == ["three", "four"]
        delivery.stop()

    def test_held_frames_go_out_after_the_resync_in_order(self):
        """While held (a resync reads the document) nothing is sent; start_after releases
        what lies beyond the new version, in order."""
        delivery = Recorded()
        delivery.start_after(1)
        delivery.hold()
        for version in (4, 2, 3):
            delivery.deliver(version, str(version))
        assert delivery.sent == []
        delivery.start_after(2)
        assert delivery.sent == ["3", "4"]
        delivery.stop()


class TestFallingBehind:
    def make(self, backlog: list[int]):
        behind: list[int] = []
        delivery = Recorded()
        delivery.backlog = lambda: backlog[0]
        delivery.backlog_limit = 100
        delivery.on_behind = behind.append
        return delivery, behind

    async def test_a_client_past_the_backlog_limit_skips_frames_until_it_resyncs(self):
        """Past backlog_limit frames are skipped (on_behind says how much), none is sent
        after; once the resync's version is set, delivery goes on from there."""
        backlog = [0]
        delivery, behind = self.make(backlog)
        delivery.start_after(0)
        delivery.deliver(1, "one")
        backlog[0] = 101
        delivery.deliver(2, "two")
        delivery.deliver(3, "three")
        assert delivery.sent == ["one"]
        assert delivery.behind
        assert behind == [3, 8]
        backlog[0] = 0
        delivery.hold()
        delivery.deliver(4, "four")
        delivery.start_after(3)
        assert delivery.sent == ["one", "four"]
        assert not delivery.behind
