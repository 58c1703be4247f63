"""Which way a person goes through a gate that checks both ways (``device.direction = "both"``).

A turnstile at a small market's one door lets people in and out. The gate cannot see which way someone walks,
so it takes the direction from the same person's last passage at this gate: after an "in" comes an "out", and
after an "out", or with no passage remembered, an "in". A passage older than ``memory_h`` is forgotten (a market
day ends; nobody is inside a closed place): the next one is "in" again.

Only a verified pass moves the toggle (accepted, or a chip card identified by policy): a refused pass is recorded as
an attempt to come in, and changes nothing. The memory is bounded (``capacity`` keys, the oldest forgotten first)
and kept in RAM only: it holds pseudonymous ids and would be one more thing to purge from the SD card; a restart
forgets it, so the first passage of each person after it counts as "in". The province's side flags a second "in"
without an "out" at a place (anti-passback) from the events; a gate never refuses for it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

Direction = Literal["in", "out"]


class PassageDirections:
    """The direction of each person's next passage at a both-ways gate, from their last one."""

    def __init__(self, *, memory_h: float = 16.0, capacity: int = 50_000) -> None:
        if memory_h <= 0 or capacity < 1:
            raise ValueError("memory_h must be positive and capacity at least 1")
        self._memory_s = memory_h * 3600.0
        self._capacity = capacity
        self._last: OrderedDict[str, tuple[Direction, float]] = OrderedDict()  # key -> (direction, wall time)

    def __len__(self) -> int:
        return len(self._last)

    def peek(self, key: str | None, now: float) -> Direction:
        """The direction a passage by ``key`` at ``now`` takes, without recording it."""
        if key is None:
            return "in"
        last = self._last.get(key)
        if last is None or now - last[1] > self._memory_s or now < last[1] - self._memory_s:
            return "in"
        return "out" if last[0] == "in" else "in"

    def record(self, key: str | None, direction: Direction, now: float) -> None:
        """Remember that ``key`` went ``direction`` at ``now`` (a person without an id is not remembered)."""
        if key is None:
            return
        self._last[key] = (direction, now)
        self._last.move_to_end(key)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)
