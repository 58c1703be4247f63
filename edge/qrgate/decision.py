"""Debouncing: one check-in per presentation of a code, not one per decoded frame.

A phone held up for two seconds is decoded in dozens of frames. The first sighting is ``NEW``
(feedback and a check-in event); the frames after it, while the code keeps being seen with gaps
shorter than ``presence_gap_s``, are ``HELD`` (nothing to do). A code that left the camera and comes
back within ``repeat_window_s`` of its ``NEW`` is a ``REPEAT``: the visitor gets the same answer
again, but no second event is recorded. After the window, a new sighting is ``NEW`` again.

Keys are opaque bytes (``payload_key`` of the QR text) so this module never holds a raw payload.
Pure logic on the monotonic clock: no I/O, O(1) per call, memory bounded by ``max_tracked``.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict


class Action(enum.Enum):
    NEW = "new"  # a new presentation: show feedback and record an event
    REPEAT = "repeat"  # shown again within the window: show feedback, no event
    HELD = "held"  # the same presentation continues: do nothing


def payload_key(text: str) -> bytes:
    """A 16-byte BLAKE2b digest of a QR text, the identity of a code for debouncing.

    ``surrogatepass`` because decoders can return text with lone surrogates from malformed bytes,
    and a hostile code must not crash the capture loop.
    """
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Sighting:
    __slots__ = ("last_seen", "window_start")

    def __init__(self, now: float) -> None:
        self.window_start = now  # monotonic time of the NEW that opened the repeat window
        self.last_seen = now


class Decider:
    """Classifies every sighting of a code as NEW, REPEAT or HELD.

    At most ``max_tracked`` codes are remembered. Past that the least recently seen is forgotten,
    and if it comes back within its window it counts as NEW again: a bounded device prefers a rare
    duplicate event to unbounded memory (256 distinct codes within one window is a busy gate).
    """

    def __init__(self, presence_gap_s: float = 0.8, repeat_window_s: float = 30.0, max_tracked: int = 256) -> None:
        if presence_gap_s <= 0:
            raise ValueError(f"presence_gap_s must be > 0, got {presence_gap_s}")
        if repeat_window_s < 0:
            raise ValueError(f"repeat_window_s must be >= 0, got {repeat_window_s}")
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be >= 1, got {max_tracked}")
        self.presence_gap_s = presence_gap_s
        self.repeat_window_s = repeat_window_s
        self.max_tracked = max_tracked
        # Least recently seen first: every sighting moves its key to the end, so expired and
        # evicted keys are always found at the front.
        self._sightings: OrderedDict[bytes, _Sighting] = OrderedDict()

    def __len__(self) -> int:
        """How many codes are remembered."""
        return len(self._sightings)

    def observe(self, key: bytes, now_mono: float) -> Action:
        """Classify one sighting of ``key`` at monotonic time ``now_mono`` (non-decreasing across calls)."""
        sightings = self._sightings
        sighting = sightings.get(key)
        if sighting is None:
            self._forget_expired(now_mono)
            sightings[key] = _Sighting(now_mono)
            if len(sightings) > self.max_tracked:
                sightings.popitem(last=False)
            return Action.NEW
        sightings.move_to_end(key)
        gap = now_mono - sighting.last_seen
        sighting.last_seen = now_mono
        if gap < self.presence_gap_s:
            return Action.HELD
        if now_mono - sighting.window_start < self.repeat_window_s:
            return Action.REPEAT
        sighting.window_start = now_mono
        return Action.NEW

    def _forget_expired(self, now_mono: float) -> None:
        # A key whose presentation has ended and whose window has closed would be NEW when seen
        # again, exactly as if it had never been tracked: forgetting it changes no answer.
        sightings = self._sightings
        while sightings:
            sighting = next(iter(sightings.values()))
            if (now_mono - sighting.last_seen < self.presence_gap_s
                    or now_mono - sighting.window_start < self.repeat_window_s):
                return
            sightings.popitem(last=False)
