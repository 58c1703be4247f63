"""The decoder for still photos (``qrgate scan``, ``qrgate verify --image``): the gate's cascade, then
a few whole-image passes for what it did not read, every code any of them reads.

A photo has no deadline and may hold several codes, so unlike the capture loop this decoder does
not stop at the first code: after the cascade (zxing-cpp at the library's defaults for QR, with
its own multi-resolution pyramid and inverted reading, then the repair ladder on every located
symbol it could not read, then its small-code look), it runs each pass below on the whole image while the cascade left
something unread: nothing read at all, or symbols located and not read.

The passes, in the order that adds the most codes per millisecond on ../shared/qr-photos (the
zxing-cpp project's real photos) in four views, as measured for docs/performance.md:

* ``upscale``: the image enlarged 2x (bicubic, bounded to ``UPSCALE_MAX_PIXELS``) then zxing-cpp.
  More pixels on a small code is the largest lever there is on photos shrunk to a gate's frame
  sizes: on the photos halved it reads 104 of 137 where zxing-cpp reads 69;
* ``global-histogram``: zxing-cpp with its global-histogram binariser, for an even, low-contrast
  print that the local-average binariser breaks into blocks;
* ``clahe``: local contrast equalisation then zxing-cpp, for a shadow or a glare veil over part of
  a code;
* ``zbar``: ZBar on the image, whose scan-line finder survives where zxing-cpp's fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import zxingcpp

from .base import DecodedCode, Decoder
from .cascade import CascadeDecoder
from .geometry import located_boxes
from .zxing import ZxingDecoder

# The upscaled image's size bound: a 12 MP photo enlarged 2x would be 48 MP (about 2 s of
# zxing-cpp here); above the bound the factor shrinks, and under 1.25 the pass is not worth it.
UPSCALE_MAX_PIXELS = 24_000_000
UPSCALE_MIN_FACTOR = 1.25


@dataclass(frozen=True, slots=True)
class WholeImagePass:
    """``decoder`` on ``prepare(grey)``, which returns the image and its scale (its pixels per
    photo pixel), or None when the pass does not apply to this photo."""

    name: str
    decoder: Decoder
    prepare: Callable[[np.ndarray], tuple[np.ndarray, float] | None]


def upscaled(grey: np.ndarray) -> tuple[np.ndarray, float] | None:
    factor = min(2.0, math.sqrt(UPSCALE_MAX_PIXELS / max(1, grey.size)))
    if factor < UPSCALE_MIN_FACTOR:
        return None
    return cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), factor


def equalised(grey: np.ndarray) -> tuple[np.ndarray, float]:
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey), 1.0


def as_is(grey: np.ndarray) -> tuple[np.ndarray, float]:
    return grey, 1.0


def default_passes(zbar: Decoder | None) -> list[WholeImagePass]:
    plain = ZxingDecoder()
    passes = [
        WholeImagePass("upscale", plain, upscaled),
        WholeImagePass("global-histogram", ZxingDecoder(binarizer=zxingcpp.Binarizer.GlobalHistogram), as_is),
        WholeImagePass("clahe", plain, equalised),
    ]
    if zbar is not None:
        passes.append(WholeImagePass("zbar", zbar, as_is))
    return passes


class PhotoDecoder:
    """The cascade, then whole-image passes while something is left unread; every code read once."""

    def __init__(self, cascade: CascadeDecoder, passes: Sequence[WholeImagePass]) -> None:
        self.name = f"{cascade.name}+photo"
        self._cascade = cascade
        self._passes = tuple(passes)

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        primary = self._cascade.primary_scan(grey)
        codes = list(primary.codes)
        height, width = grey.shape
        # Every located symbol that is not a code already read gets the ladder, not only the first.
        left_unread = False
        for box in located_boxes(primary.regions, height, width):
            if not any(_inside(code, box) for code in codes):
                found = self._cascade.read_region(grey, box)
                _add(codes, found)
                left_unread |= not found
        if codes and not left_unread:
            return codes
        # What the gate's cascade does where zxing located nothing: the small-code look and the
        # texture ladder.
        _add(codes, self._cascade.read_unlocated(grey, located_boxes(primary.regions, height, width)))
        for whole in self._passes:
            prepared = whole.prepare(grey)
            if prepared is None:
                continue
            image, scale = prepared
            found = whole.decoder.decode(image)
            _add(codes, [_rescaled(code, scale, whole.name) for code in found])
        return codes


def _inside(code: DecodedCode, box: tuple[int, int, int, int]) -> bool:
    cx = sum(x for x, _ in code.corners) / 4
    cy = sum(y for _, y in code.corners) / 4
    return box[0] <= cx < box[2] and box[1] <= cy < box[3]


def _add(codes: list[DecodedCode], found: list[DecodedCode]) -> None:
    """Append the codes of ``found`` not read already: the same text with its centre inside an
    earlier one's outline is the same code read twice."""
    for code in found:
        cx = sum(x for x, _ in code.corners) / 4
        cy = sum(y for _, y in code.corners) / 4
        if not any(other.text == code.text and _within(other, cx, cy) for other in codes):
            codes.append(code)


def _within(code: DecodedCode, x: float, y: float) -> bool:
    xs = [p[0] for p in code.corners]
    ys = [p[1] for p in code.corners]
    return min(xs) - 2 <= x <= max(xs) + 2 and min(ys) - 2 <= y <= max(ys) + 2


def _rescaled(code: DecodedCode, scale: float, name: str) -> DecodedCode:
    if scale == 1.0:
        return DecodedCode(code.text, code.corners, name)
    corners = tuple((round(x / scale), round(y / scale)) for x, y in code.corners)
    return DecodedCode(code.text, corners, name)  # type: ignore[arg-type]  # four points in, four out
