"""The small-code look: where zxing-cpp located nothing, find code-like texture and read it enlarged.

A code held at arm's length in a 640x480 frame, or a photo shrunk to a gate's frame size, can
have modules of 1-2 pixels: too few for zxing-cpp's finder-pattern search, so it locates nothing
and the repair ladder (which works on located symbols only) never runs. More pixels on the code
is the lever (the same zxing-cpp call on the frame upscaled 2x reads far more such codes), but
enlarging the whole frame costs about four calls, on every frame without a code.

So only where a code could be: a QR symbol is a square of dense edges in both directions. On a
thumbnail about ``WORK_WIDTH`` px wide, the Sobel gradient's magnitude in x and in y is averaged
over a few modules, the smaller of the two thresholded (Otsu) and closed, and the connected
blobs that are square-ish and mostly filled are the candidates, largest first. Each candidate's
box (with a quiet-zone margin) is cut from the full frame, enlarged by up to ``FACTOR`` (at most
``MAX_SIDE_PX`` on its longer side; a box already that large is not small and is skipped) and
read by zxing-cpp, then once more sharpened if that read nothing.

Measured on ../shared/qr-photos (docs/performance.md, "Against bare zxing-cpp"): with the photos
halved, the gate's decoder read 92 of 137 without it and 115 with it (whole-frame 2x upscaling
instead: 112; without the sharpened second read: 112); at a third of their size 54 and 76 (67
without the second read). With the texture ladder below and the ladder's two rungs for photos,
100 without the look and 124 with it halved, 54 and 78 at a third. The look costs about 0.5 ms
there, and it runs only on frames where zxing-cpp read nothing (nor the ladder, where zxing
located something). OpenCV's QR detectors were not tried as the locator: they too search for
finder patterns. The reader is the gate's zxing-cpp call with ``try_invert`` (2 more halved
photos than without: light-on-dark codes); factor 2 instead of 3 read 2 fewer, and 3 boxes
instead of 2 none more.

The same texture map finds codes that are not small but that zxing-cpp cannot locate either
(blurred, streaked, moiré-striped, a finder pattern washed out): ``look`` also returns the
candidates it did not read whose edges are dense enough (``STRONG_EDGES``), and the cascade runs
the repair ladder on the largest of them (``CascadeDecoder.read_unlocated``). ``StaticTexture``
keeps that from being paid again and again on the scene's own code-like clutter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .base import DecodedCode, Decoder
from .geometry import Box

WORK_WIDTH = 320  # the texture map's width: 2 px per module still shows at a 2304 px frame's /7
FACTOR = 3.0  # 3x read 2 more of the halved photos than 2x, at the same median cost
MAX_SIDE_PX = 900  # an enlarged crop's longer side: about a 640x480 frame's zxing-cpp cost
MIN_FACTOR = 1.5  # a box that cannot be enlarged this much is not a small code
SHARPEN_SIGMA_PX = 0.6  # the second read's unsharp mask, in frame pixels (1.0 and 1.5 read fewer)
# The texture ladder's bar (CascadeDecoder.read_unlocated): a blob's mean edge density, in the
# texture map's units. On the bench's frames the codes had about 37-150, the wall's texture and
# noise 18-26 and its clutter (panels, text) 35-69, which is what StaticTexture is for. A bar of 20
# read 2 fewer frames at 2304x1296 (blur, motion, lighting, close-up), 50 read 7 fewer.
STRONG_EDGES = 35.0


class SmallCodeLook:
    """``read(grey)``: ``decoder`` on each of at most ``max_boxes`` code-like boxes, enlarged.
    Stateless, so decode threads can share one."""

    def __init__(self, decoder: Decoder, *, max_boxes: int = 2) -> None:
        if max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
        self.decoder = decoder
        self.max_boxes = max_boxes
        self._square = np.ones((5, 5), np.uint8)

    def candidates(self, grey: np.ndarray) -> list[Box]:
        """Code-like boxes in frame pixels, largest first (at most ``max_boxes``)."""
        return [box for box, _edges in self.blobs(grey)]

    def blobs(self, grey: np.ndarray) -> list[tuple[Box, float]]:
        """``candidates`` with each blob's edge density: the mean, over the blob, of the smaller
        direction's gradient magnitude on the texture map (what ``STRONG_EDGES`` is compared with)."""
        height, width = grey.shape
        step = max(1, round(width / WORK_WIDTH))
        small = cv2.resize(grey, (width // step, height // step), interpolation=cv2.INTER_AREA) if step > 1 else grey
        # The smaller of the two directions' edge densities: text and stripes have edges mostly
        # one way, a QR symbol both ways.
        dx = cv2.blur(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 1, 0, ksize=3)), (7, 7))
        dy = cv2.blur(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 0, 1, ksize=3)), (7, 7))
        both = cv2.min(dx, dy)
        _, mask = cv2.threshold(both, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._square)
        count, labels, stats, _centroids = cv2.connectedComponentsWithStats(mask)
        blobs = []
        for label, (x, y, w, h, area) in enumerate(stats[1:count], start=1):
            # Square-ish (a symbol tilted 45 degrees in perspective stays within 2.2:1) and mostly
            # filled (a ring of edges around a dark object is not a code).
            if min(w, h) >= 6 and max(w, h) <= 2.2 * min(w, h) and area >= 0.4 * w * h:
                blobs.append((int(area), label, int(x), int(y), int(w), int(h)))
        blobs.sort(reverse=True)
        found: list[tuple[Box, float]] = []
        for _area, label, x, y, w, h in blobs[:self.max_boxes]:
            pad = int(0.25 * max(w, h)) + 2  # the quiet zone, and the blur's spread at the edges
            edges = float(cv2.mean(both[y:y + h, x:x + w], (labels[y:y + h, x:x + w] == label).view(np.uint8))[0])
            found.append(((max(0, (x - pad) * step), max(0, (y - pad) * step),
                           min(width, (x + w + pad) * step), min(height, (y + h + pad) * step)), edges))
        return found

    def read(self, grey: np.ndarray) -> list[DecodedCode]:
        """The codes read in the first candidate box that yields any; corners in frame pixels."""
        return self.look(grey)[0]

    def look(self, grey: np.ndarray) -> tuple[list[DecodedCode], list[tuple[Box, float]]]:
        """``read``, and the code-like boxes it did not read whose edges are ``STRONG_EDGES`` or
        denser, with their edge density, largest first: where the repair ladder may still find a
        code (CascadeDecoder)."""
        strong: list[tuple[Box, float]] = []
        for (x0, y0, x1, y1), edges in self.blobs(grey):
            if edges >= STRONG_EDGES:
                strong.append(((x0, y0, x1, y1), edges))
            factor = min(FACTOR, MAX_SIDE_PX / max(x1 - x0, y1 - y0))
            if factor < MIN_FACTOR:
                continue
            crop = cv2.resize(grey[y0:y1, x0:x1], None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
            found = self.decoder.decode(crop)
            if not found:
                # The optics blur a small code's modules into each other; an unsharp mask about
                # half a module wide (0.6 px of the frame) separates them again.
                blurred = cv2.GaussianBlur(crop, (0, 0), SHARPEN_SIGMA_PX * factor)
                found = self.decoder.decode(cv2.addWeighted(crop, 2.5, blurred, -1.5, 0))
            if found:
                return [_to_frame(code, factor, x0, y0) for code in found], []
        return [], strong


def _to_frame(code: DecodedCode, factor: float, x0: int, y0: int) -> DecodedCode:
    corners = tuple((round(x / factor) + x0, round(y / factor) + y0) for x, y in code.corners)
    return DecodedCode(code.text, corners, "small+" + code.backend)  # type: ignore[arg-type]  # four points


@dataclass(slots=True)
class _Remembered:
    box: Box
    edges: float
    skipped: int = 0


class StaticTexture:
    """Code-like boxes the ladder read nothing in, so that the scene's own clutter (a poster, a
    grille, a keyboard) is not laddered again on every frame the presence gate lets through.

    ``fresh(box, edges)`` is False for a box within ``slack`` of the frame's width of one
    remembered, with edges within ``EDGES_SLACK`` of its; such a box is retried every
    ``retry_every``-th time (a code held still and unread may read on a later frame, as the
    presence gate decodes a static scene every Nth frame). ``failed`` remembers a box, ``read``
    forgets any remembered where a code was read. Thread-safe; at most ``size`` boxes, the oldest
    dropped first.
    """

    EDGES_SLACK = 0.15

    def __init__(self, *, size: int = 6, slack: float = 0.02, retry_every: int = 10) -> None:
        if size < 1 or slack < 0 or retry_every < 1:
            raise ValueError(f"size and retry_every must be >= 1 and slack >= 0, got {size}, {slack}, {retry_every}")
        self.size, self.slack, self.retry_every = size, slack, retry_every
        self._boxes: list[_Remembered] = []
        self._lock = threading.Lock()
        self.skipped = 0

    def fresh(self, box: Box, edges: float, width: int) -> bool:
        """Whether ``box`` (in a frame ``width`` px wide) is worth a ladder (see the class)."""
        with self._lock:
            known = self._match(box, edges, width)
            if known is None:
                return True
            known.skipped += 1
            if known.skipped >= self.retry_every:
                known.skipped = 0
                return True
            self.skipped += 1
            return False

    def failed(self, box: Box, edges: float, width: int) -> None:
        """The ladder read nothing in ``box``: remember it."""
        with self._lock:
            if self._match(box, edges, width) is None:
                self._boxes.append(_Remembered(box, edges))
                del self._boxes[:-self.size]

    def read(self, box: Box, width: int) -> None:
        """A code was read in ``box``: whatever was remembered there was the code, not clutter."""
        with self._lock:
            tolerance = self.slack * width
            self._boxes = [known for known in self._boxes
                           if max(abs(a - b) for a, b in zip(known.box, box, strict=True)) > tolerance]

    def _match(self, box: Box, edges: float, width: int) -> _Remembered | None:
        tolerance = self.slack * width
        for known in self._boxes:
            if max(abs(a - b) for a, b in zip(known.box, box, strict=True)) <= tolerance \
                    and abs(known.edges - edges) <= self.EDGES_SLACK * known.edges:
                return known
        return None
