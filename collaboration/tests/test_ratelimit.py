"""The token bucket of a connection's messages."""

import pytest

from collaboration import ratelimit
from collaboration.ratelimit import TokenBucket


class TestTokenBucket:
    @pytest.mark.parametrize("burst", [1, 3])
    def test_allows_a_burst_then_refuses(self, burst):
        """A full bucket lets `burst` messages through at once, then refuses."""
        bucket = TokenBucket(rate=0.001, burst=burst)
        assert [bucket.take() for _ in range(burst + 1)] == [True] * burst + [False]

    def test_refills_at_its_rate_up_to_its_burst(self, monkeypatch):
        """Ten seconds at 1/s refill an empty bucket of 2 to 2, not 10."""
        now = [100.0]

        class Clock:
            @staticmethod
            def monotonic():
                return now[0]

        monkeypatch.setattr(ratelimit, "time", Clock)
        bucket = TokenBucket(rate=1, burst=2)
        assert bucket.take() and bucket.take()
        assert not bucket.take()
        now[0] += 10
        assert [bucket.take() for _ in range(3)] == [True, True, False]
