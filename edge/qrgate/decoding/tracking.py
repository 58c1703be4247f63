"""Where the last code was: decode there first, and give it a second chance when the frame fails.

A visitor holds a code up for a second or two, moving it a little. After one read, the next
frame's code is almost certainly within a margin of the same place: decoding that crop first is
cheaper than the whole frame, and when the whole frame fails too (a blurred frame, a moiré band,
glare as the phone tilts, a code zxing does not even locate), the repair ladder on that region
reads many of them. The hint lasts ``hold_frames`` decoded frames after the last sighting.

That second chance costs up to ~10 ms here, and most frames after a visitor leaves have no code
left to rescue. ``texture`` tells them apart cheaply: the standard deviation of the region shrunk
4x by area averaging. Blur, moiré and glare leave it nearly unchanged (frames the ladder rescued
kept 91-102 % of the value the region had when the code was read, 5th to 95th percentile), while
the wall that remains when the code is gone keeps a third of it (95th percentile 88 %). The ladder
runs only from ``TEXTURE_KEPT`` up, and only for ``hold_frames`` frames: together they keep the
frames after a visit as cheap as zxing alone, at the loss of about one rescue in twenty.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .base import Corners
from .cascade import Box, region_box

TEXTURE_KEPT = 0.9  # share of the region's texture at the sighting that means "the code is still there"
# A held code is sighted every frame and its texture barely changes: measuring it on every
# sighting would add a fifth to the cost of a read frame, so a fresh hint keeps the last value
# for this many sightings.
TEXTURE_EVERY = 4


def texture(region: np.ndarray) -> float:
    """Coarse-scale contrast of a region: the standard deviation of it shrunk 4x by area averaging."""
    height, width = region.shape
    small = cv2.resize(region, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    return float(cv2.meanStdDev(small)[1][0, 0])


@dataclass(frozen=True, slots=True)
class Hint:
    box: Box
    read: bool  # a code was read there (not only located)
    texture: float  # texture() of the box in the frame of the sighting

    def still_there(self, grey: np.ndarray) -> bool:
        """Whether the box in ``grey`` still looks like it holds the code (see TEXTURE_KEPT)."""
        x0, y0, x1, y1 = self.box
        return texture(grey[y0:y1, x0:x1]) >= TEXTURE_KEPT * self.texture


class RegionTracker:
    """The region of the last code read or located, for ``hold_frames`` frames. Thread-safe."""

    def __init__(self, *, hold_frames: int = 8, margin: float = 0.3) -> None:
        if hold_frames < 1 or margin < 0:
            raise ValueError(f"hold_frames must be >= 1 and margin >= 0, got {hold_frames}, {margin}")
        self.hold_frames = hold_frames
        self.margin = margin
        self._lock = threading.Lock()
        self._hint: Hint | None = None
        self._age = 0
        self._sightings_since_texture = 0

    def hint(self) -> Hint | None:
        """The region to look at first, or None; ages the hint by a frame."""
        with self._lock:
            if self._hint is None or self._age >= self.hold_frames:
                return None
            self._age += 1
            return self._hint

    def saw(self, grey: np.ndarray, corners: Iterable[Corners], *, read: bool) -> None:
        """A code was read (``read``) or located at ``corners`` in ``grey``, the latest frame."""
        box = region_box(corners, grey.shape[0], grey.shape[1], self.margin)
        if box is None:
            return
        with self._lock:
            previous = self._hint if self._age <= 1 else None
            self._sightings_since_texture += 1
            fresh = previous is not None and self._sightings_since_texture < TEXTURE_EVERY
            if not fresh:
                self._sightings_since_texture = 0
        if fresh:
            assert previous is not None
            value = previous.texture
        else:
            x0, y0, x1, y1 = box
            value = texture(grey[y0:y1, x0:x1])
        with self._lock:
            self._hint, self._age = Hint(box, read, value), 0
