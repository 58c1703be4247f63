"""The per-frame decoder the gate runs: presence gate, then the tracked region, then the cascade.

``decode(grey)`` is the whole path on one thread (the ``Decoder`` interface the gate calls).
For decoding on several threads it splits in two: ``wants(grey)`` (the presence gate, on the
capture loop, before the frame is copied anywhere) and ``read(grey)`` (thread-safe: the
tracker locks, the cascade and the decoders keep no per-call state).

Per decoded frame:

1. A code was read a moment ago: zxing on that region first (a crop is a few times cheaper than
   the frame). Every ``full_frame_every``-th frame goes to step 2 anyway, so a second visitor's
   code elsewhere in the frame is not missed while the first is held up.
2. The cascade on the whole frame: zxing, the repair ladder on any located-but-unreadable QR,
   and where nothing was read, the small-code look and the ladder on the largest code-like
   texture zxing did not locate (``CascadeDecoder.read_unlocated``).
3. Nothing read and nothing located, but a code was read or located there within the last few
   frames and the region still looks like it (``Hint.still_there``): the repair ladder on that
   region. Codes zxing fails to even locate (heavy blur, moiré, a shadow edge) are read here.
4. Optional (``sweep``; ``build_pipeline`` leaves it out): still nothing read, on every
   ``sweep_every``-th such frame, a sweep decoder (ZBar) on the whole frame, shrunk to at most
   ``SWEEP_MAX_WIDTH``. ZBar's scan-line finder reads some codes zxing-cpp never locates (a
   damaged finder pattern: at 1280x720 and 2304x1296, 17 and 18 of the 90 damage frames); since
   step 2 ladders the code-like texture zxing does not locate, ZBar among its rungs, the sweep
   reads none of the bench's frames that step 2 has not, so the gate does not pay for it. The
   first such frame of a pipeline is swept (a single photo is read as a gate would).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .base import DecodedCode, Decoder, DetectingDecoder
from .cascade import CascadeDecoder
from .geometry import box_area, box_overlap, located_boxes
from .presence import PresenceGate
from .tracking import RegionTracker

# Step 4's frame width bound: ZBar read as many of the damaged codes at 960 px as at the full
# 1280 or 2304 (17 and 18 of 90 against 14 and 16) in a half or a seventh of the time (10 ms); a
# sweep at 1280 px read nothing more either.
SWEEP_MAX_WIDTH = 960


@dataclass(slots=True)
class PipelineStats:
    decoded: int = 0  # frames read() was called for
    region_first: int = 0  # ... read by step 1 alone
    region_repaired: int = 0  # ... read by step 3
    swept: int = 0  # frames the sweep (step 4) ran on
    sweep_reads: int = 0  # ... and read a code


class FramePipeline:
    """Presence gate, region tracking and the decoder cascade, behind the ``Decoder`` interface."""

    def __init__(
        self,
        decoder: Decoder,
        *,
        region_decoder: Decoder | None = None,
        presence: PresenceGate | None = None,
        tracker: RegionTracker | None = None,
        full_frame_every: int = 4,
        sweep: Decoder | None = None,
        sweep_every: int = 3,
    ) -> None:
        """``decoder`` reads whole frames (a CascadeDecoder, for step 3); ``region_decoder`` reads
        the tracked region in step 1 (default: ``decoder``); ``sweep`` is step 4's decoder (none:
        no step 4)."""
        if full_frame_every < 1 or sweep_every < 1:
            raise ValueError(f"full_frame_every and sweep_every must be >= 1, got {full_frame_every}, {sweep_every}")
        self.name = decoder.name
        self.decoder = decoder
        self.presence = presence
        self.tracker = tracker
        self.full_frame_every = full_frame_every
        self.stats = PipelineStats()
        self._scan = decoder.scan if isinstance(decoder, DetectingDecoder) else None
        self._region_decode = (region_decoder or decoder).decode
        self._read_region = decoder.read_region if isinstance(decoder, CascadeDecoder) else None
        self._lock = threading.Lock()
        self._since_full = 0
        self._sweep = sweep
        self.sweep_every = sweep_every
        self._since_sweep = sweep_every - 1  # the first frame with nothing found is swept

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        if self.presence is not None and not self.presence.wants(grey):
            return []
        return self.read(grey)

    def wants(self, grey: np.ndarray) -> bool:
        """The presence gate's decision (always True without one). Capture thread only."""
        return self.presence is None or self.presence.wants(grey)

    def read(self, grey: np.ndarray) -> list[DecodedCode]:
        """Decode one frame (steps 1-4). Safe to call from several threads at once."""
        tracker = self.tracker
        hint = tracker.hint() if tracker is not None else None
        with self._lock:
            self.stats.decoded += 1
            self._since_full += 1
            full_due = self._since_full >= self.full_frame_every
            if full_due or hint is None or not hint.read:
                self._since_full = 0
        if hint is not None and hint.read and not full_due:
            x0, y0, x1, y1 = hint.box
            found = self._region_decode(grey[y0:y1, x0:x1])
            if found:
                codes = [_shifted(code, x0, y0) for code in found]
                self._saw(grey, codes)
                with self._lock:
                    self.stats.region_first += 1
                return codes
        if self._scan is not None:
            scan = self._scan(grey)
            codes, located = scan.codes, scan.regions
        else:
            codes, located = self.decoder.decode(grey), ()
        if codes:
            self._saw(grey, codes)
            return codes
        if located:
            # The cascade ran the ladder on what zxing located. A code read here a moment ago
            # that zxing now only partly locates (one finder pattern, the rest under glare) is
            # better framed by its tracked region, moved on with the hand: the ladder there too,
            # when what was located lies in that region (not clutter elsewhere after the code
            # has gone) and did not already cover most of it.
            boxes = located_boxes(located, grey.shape[0], grey.shape[1])
            if hint is not None and hint.read and self._read_region is not None \
                    and any(box_overlap(hint.box, box) for box in boxes) \
                    and not any(box_overlap(hint.box, box) >= 0.8 * box_area(hint.box) for box in boxes):
                codes = self._read_region(grey, hint.box)
                if codes:
                    self._saw(grey, codes)
                    with self._lock:
                        self.stats.region_repaired += 1
                    return codes
            if tracker is not None:
                tracker.saw(grey, located, read=False)
            self._set_active(True)
            # The sweep here too: what zxing located may be a false finder pattern or a corner
            # of the code, and ZBar finds its own (close-up at 1280x720: 56 -> 59 of 60 frames).
            codes = self._swept(grey) if self._sweep is not None else []
            if codes:
                self._saw(grey, codes)
            return codes
        if hint is not None and self._read_region is not None and hint.still_there(grey):
            codes = self._read_region(grey, hint.box)
            if codes:
                self._saw(grey, codes)
                with self._lock:
                    self.stats.region_repaired += 1
                return codes
        if self._sweep is not None:
            codes = self._swept(grey)
            if codes:
                self._saw(grey, codes)
                return codes
        self._set_active(False)
        return []

    def _swept(self, grey: np.ndarray) -> list[DecodedCode]:
        """Step 4, when it is due."""
        assert self._sweep is not None
        with self._lock:
            self._since_sweep += 1
            if self._since_sweep < self.sweep_every:
                return []
            self._since_sweep = 0
            self.stats.swept += 1
        scale = min(1.0, SWEEP_MAX_WIDTH / grey.shape[1])
        image = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._sweep.decode(image)
        if not found:
            return []
        with self._lock:
            self.stats.sweep_reads += 1
        return [_scaled(code, scale, "sweep+" + code.backend) for code in found]

    def _saw(self, grey: np.ndarray, codes: list[DecodedCode]) -> None:
        if self.tracker is not None:
            self.tracker.saw(grey, (code.corners for code in codes), read=True)
        self._set_active(True)

    def _set_active(self, active: bool) -> None:
        if self.presence is not None:
            self.presence.active = active


def _scaled(code: DecodedCode, scale: float, name: str) -> DecodedCode:
    corners = tuple((round(x / scale), round(y / scale)) for x, y in code.corners)
    return DecodedCode(code.text, corners, name)  # type: ignore[arg-type]  # four points in, four out


def _shifted(code: DecodedCode, x0: int, y0: int) -> DecodedCode:
    corners = tuple((x + x0, y + y0) for x, y in code.corners)
    return DecodedCode(code.text, corners, code.backend)  # type: ignore[arg-type]  # four points in, four out

