"""Rate limiting of one connection's messages: a token bucket."""

import time


class TokenBucket:
    """`burst` messages at once, then `rate` a second; starts full."""

    def __init__(self, *, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.refilled_at = time.monotonic()

    def take(self) -> bool:
        """Spend a token if there is one; False means the message is over the limit."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
