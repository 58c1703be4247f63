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
halved, the gate's decoder reads 92 of 137 without it and 115 with it (whole-frame 2x upscaling
instead: 112; without the sharpened second read: 112); at a third of their size 54 and 76 (67
without the second read). The look costs about 0.5 ms there, and it runs only on frames where
zxing-cpp read nothing (nor the ladder, where zxing located something). OpenCV's QR detectors
were not tried as the locator: they too search for finder patterns. The reader is the gate's
zxing-cpp call with ``try_invert`` (2 more halved photos than without: light-on-dark codes);
factor 2 instead of 3 read 2 fewer, and 3 boxes instead of 2 none more.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import DecodedCode, Decoder
from .geometry import Box

WORK_WIDTH = 320  # the texture map's width: 2 px per module still shows at a 2304 px frame's /7
FACTOR = 3.0  # 3x read 2 more of the halved photos than 2x, at the same median cost
MAX_SIDE_PX = 900  # an enlarged crop's longer side: about a 640x480 frame's zxing-cpp cost
MIN_FACTOR = 1.5  # a box that cannot be enlarged this much is not a small code
SHARPEN_SIGMA_PX = 0.6  # the second read's unsharp mask, in frame pixels (1.0 and 1.5 read fewer)


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
        height, width = grey.shape
        step = max(1, round(width / WORK_WIDTH))
        small = cv2.resize(grey, (width // step, height // step), interpolation=cv2.INTER_AREA) if step > 1 else grey
        # The smaller of the two directions' edge densities: text and stripes have edges mostly
        # one way, a QR symbol both ways.
        dx = cv2.blur(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 1, 0, ksize=3)), (7, 7))
        dy = cv2.blur(cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 0, 1, ksize=3)), (7, 7))
        _, mask = cv2.threshold(cv2.min(dx, dy), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._square)
        count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(mask)
        blobs = []
        for x, y, w, h, area in stats[1:count]:
            # Square-ish (a symbol tilted 45 degrees in perspective stays within 2.2:1) and mostly
            # filled (a ring of edges around a dark object is not a code).
            if min(w, h) >= 6 and max(w, h) <= 2.2 * min(w, h) and area >= 0.4 * w * h:
                blobs.append((int(area), int(x), int(y), int(w), int(h)))
        blobs.sort(reverse=True)
        boxes = []
        for _area, x, y, w, h in blobs[:self.max_boxes]:
            pad = int(0.25 * max(w, h)) + 2  # the quiet zone, and the blur's spread at the edges
            boxes.append((max(0, (x - pad) * step), max(0, (y - pad) * step),
                          min(width, (x + w + pad) * step), min(height, (y + h + pad) * step)))
        return boxes

    def read(self, grey: np.ndarray) -> list[DecodedCode]:
        """The codes read in the first candidate box that yields any; corners in frame pixels."""
        for x0, y0, x1, y1 in self.candidates(grey):
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
                return [_to_frame(code, factor, x0, y0) for code in found]
        return []


def _to_frame(code: DecodedCode, factor: float, x0: int, y0: int) -> DecodedCode:
    corners = tuple((round(x / factor) + x0, round(y / factor) + y0) for x, y in code.corners)
    return DecodedCode(code.text, corners, "small+" + code.backend)  # type: ignore[arg-type]  # four points
