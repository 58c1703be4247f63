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
from .geometry import Box, box_centre, box_overlap, located_boxes, region_box

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
    """The region of the last code read or located, for ``hold_frames`` frames. Thread-safe.

    Two things keep the region on the code between reads:

    * **Motion**: the box moves on with the code's velocity, measured between the last two reads
      (a waving hand moves a code 5-20 px per frame at 30 fps; a box that stays put loses it
      within a few frames, just when blur stops every read).
    * **Partial sightings**: when zxing locates something inside the region of a code read
      a moment ago, that is usually one finder pattern of the same code (glare has washed out
      another, so the symbol cannot be framed): its box covers a corner of the code, not the
      code. The read region is kept, and its hold renewed, instead of being replaced by it.
    """

    def __init__(self, *, hold_frames: int = 5, margin: float = 0.3) -> None:
        if hold_frames < 1 or margin < 0:
            raise ValueError(f"hold_frames must be >= 1 and margin >= 0, got {hold_frames}, {margin}")
        self.hold_frames = hold_frames
        self.margin = margin
        self._lock = threading.Lock()
        self._hint: Hint | None = None
        self._age = 0
        self._sightings_since_texture = 0
        self._clock = 0  # hint() calls: one per decoded frame
        self._read_at: tuple[int, float, float] | None = None  # clock and box centre of the last read
        self._velocity = (0.0, 0.0)  # px per decoded frame, from the last two reads
        self._frame_size = (0, 0)

    def hint(self) -> Hint | None:
        """The region to look at first, or None; ages the hint by a frame."""
        with self._lock:
            self._clock += 1
            if self._hint is None or self._age >= self.hold_frames:
                return None
            self._age += 1
            hint = self._hint
            if not hint.read or self._velocity == (0.0, 0.0):
                return hint
            return Hint(self._box_now(), True, hint.texture)

    def saw(self, grey: np.ndarray, corners: Iterable[Corners], *, read: bool) -> None:
        """A code was read (``read``) or located at ``corners`` in ``grey``, the latest frame."""
        height, width = grey.shape
        if read:
            box = region_box(corners, height, width, self.margin)
        else:  # the largest symbol located, not the box around it and whatever else zxing took for one
            box = next(iter(located_boxes(corners, height, width, self.margin)), None)
        if box is None:
            return
        with self._lock:
            self._frame_size = (height, width)
            current = self._hint if self._age < self.hold_frames else None
            if not read and current is not None and current.read and box_overlap(box, now := self._box_now()):
                # Part of the code read a moment ago: keep its region where it has moved to (see
                # the class). ``now`` is taken before the age is reset: after, it is the old place.
                self._age = 0
                self._hint = Hint(now, True, current.texture)
                self._read_at = None if self._read_at is None else (self._clock, *box_centre(now))
                return
            if read:
                cx, cy = box_centre(box)
                last = self._read_at
                frames = self._clock - last[0] if last is not None else 0
                vx, vy = ((cx - last[1]) / frames, (cy - last[2]) / frames) if last is not None and frames else (0, 0)
                # A jump of more than half the box per frame is not one hand moving: another code.
                fast = abs(vx) > (box[2] - box[0]) / 2 or abs(vy) > (box[3] - box[1]) / 2
                self._velocity = (0.0, 0.0) if frames > self.hold_frames or fast else (vx, vy)
                self._read_at = (self._clock, cx, cy)
            previous = current if self._age <= 1 else None
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

    def _box_now(self) -> Box:
        """The current hint's box moved on by the velocity for its age. Caller holds the lock."""
        assert self._hint is not None
        vx, vy = self._velocity if self._hint.read else (0.0, 0.0)
        return _moved(self._hint.box, vx * self._age, vy * self._age, *self._frame_size)


def _moved(box: Box, dx: float, dy: float, height: int, width: int) -> Box:
    """``box`` shifted by (dx, dy), kept whole inside the frame (a code leaving the frame leaves
    the box at the edge)."""
    x0, y0, x1, y1 = box
    dx = min(max(round(dx), -x0), width - x1) if width else 0
    dy = min(max(round(dy), -y0), height - y1) if height else 0
    return x0 + dx, y0 + dy, x1 + dx, y1 + dy

