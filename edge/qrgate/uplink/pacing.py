"""How fast the uplink may go: exponential backoff with full jitter (between connection attempts, and the pause after
the broker refuses a check-in), and the token bucket that paces a backlog's drain."""

from __future__ import annotations

import random
import sys

from ..errors import UplinkError


def full_jitter_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    Spreading the whole interval (not just a fraction) is what keeps many devices from retrying
    together after a shared outage.
    """
    ceiling = min(cap_s, base_s * 2 ** min(attempt, 32))
    return rng.uniform(0.0, ceiling)


class TokenBucket:
    """At most ``rate`` events per second on average, ``burst`` at once; ``rate`` None: no limit.

    Hand-written: it is a dozen lines, and the rate-limit libraries on PyPI are built for asyncio
    or for decorating calls, not for "how many may I send now, and when may I send the next".
    """

    def __init__(self, rate: float | None, burst: float) -> None:
        if rate is not None and rate <= 0:
            raise UplinkError("the backlog rate must be positive (or unlimited)")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp: float | None = None

    def available(self, now: float) -> int:
        """Whole events that may be sent at ``now`` (monotonic seconds)."""
        if self.rate is None:
            return sys.maxsize
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return int(self._tokens + 1e-9)

    def take(self, count: int) -> None:
        if self.rate is not None:
            self._tokens -= count

    def next_in(self) -> float:
        """Seconds from the last ``available()`` until one more event may go."""
        if self.rate is None:
            return 0.0
        return max(0.0, (1.0 - self._tokens) / self.rate)


class RefusalPause:
    """Publishing pauses after the broker refuses a check-in (0x87 "Not authorized" when an ACL denies the topic):
    the refused events stay pending, and retrying them at once would only be refused again. The pause grows with
    the refusals in a row, up to ``cap_s``, and an accepted check-in ends the run."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._rng = rng
        self._in_a_row = 0
        self.until = 0.0  # monotonic time publishing may resume

    def paused(self, now: float) -> bool:
        return now < self.until

    def refused(self, now: float) -> None:
        # One backoff step per publishing round: the other refusals of the same window
        # arrive while publishing is already paused and must not escalate it further.
        if now >= self.until:
            self.until = now + full_jitter_delay(self._in_a_row, self._base_s, self._cap_s, self._rng)
            self._in_a_row += 1

    def accepted(self) -> None:
        self._in_a_row = 0

    def lift(self) -> None:
        """Publish again now (an operator's flush): the run of refusals is kept, so a new refusal pauses longer."""
        self.until = 0.0
