"""zxing-cpp, restricted to QR: the default backend (fast on empty frames, reads more codes than zbar).

The frame goes to zxing-cpp through the buffer protocol with its strides, so neither a
C-contiguous array nor a strided view (the Y plane of a padded YUV420 buffer) is copied: the
library reads rows at the given row stride. Its only per-call allocation proportional to the
frame is its own binarised image (1 byte per pixel), inherent to the algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zxingcpp

from .base import Corners, DecodedCode, Scan, image_corners

NAME = "zxing"


class ZxingDecoder:
    """QR-only zxing-cpp reader.

    Options, as measured on the synthetic gate scene at 640x480, 1280x720 and 2304x1296 and on
    ../shared/qr-photos (docs/performance.md, "zxing-cpp's options"); the gate turns on the two
    that read more (``build_decoder``):

    * ``try_invert`` (gate: on): also read light-on-dark codes (a phone in dark mode, some posters).
      zxing-cpp inverts the binarised image it already has, so it costs about 40 % more per call,
      against a whole second call for an inverted copy of the frame.
    * ``try_downscale`` (gate: on): also read the frame at 1/3 (and 1/9, ...) of its size while it
      is over 500 px: the library's multi-resolution reading. It is what reads a code that fills
      the frame (modules too large for the binariser's 40 px window) and a screen's moiré (the
      smaller image averages the pixel grid away): without it a close-up at 2304x1296 reads 43 %
      against 64 %. About 40 % more per call; a half-size zxing call of our own costs the same and
      reads no more, so the library's own is used.
    * ``try_rotate`` (off): looks for 90/270-degree rotated 1-D codes; QR detection is
      rotation-invariant already, so for QR it reads nothing more and costs time.
    * ``binarizer`` (LocalAverage): GlobalHistogram reads some even, low-contrast prints the local
      one does not and loses more elsewhere; it is a whole-image pass of ``qrgate scan``
      (decoding/photo.py) and, after smoothing, a rung of the repair ladder (a picture printed
      inside the modules: cascade.default_attempts). FixedThreshold and BoolCast are for images
      already binarised.
    * ``is_pure`` is never set: it is for a symbol alone on a clean image (a rendered PNG), never a
      camera frame.
    """

    name = NAME

    def __init__(self, *, try_rotate: bool = False, try_invert: bool = False, try_downscale: bool = False,
                 binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage) -> None:
        self._options: dict[str, Any] = {
            "formats": zxingcpp.BarcodeFormat.QRCode,
            "try_rotate": try_rotate,
            "try_invert": try_invert,
            "try_downscale": try_downscale,
            "binarizer": binarizer,
            # Plain: the symbol's text as its ECI/charset says, with control characters kept as
            # they are (the default HRI mode rewrites them as "<NUL>", which would alter payloads).
            "text_mode": zxingcpp.TextMode.Plain,
            # Also return symbols that were located but failed to decode, so a fallback decoder
            # can be asked only about frames that really show a QR.
            "return_errors": True,
        }

    def scan(self, grey: np.ndarray) -> Scan:
        codes: list[DecodedCode] = []
        regions: list[Corners] = []
        for barcode in zxingcpp.read_barcodes(grey, **self._options):
            pos = barcode.position
            points = (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
            corners = image_corners((p.x, p.y) for p in points)
            if barcode.valid:
                codes.append(DecodedCode(barcode.text, corners, NAME))
            else:
                regions.append(corners)
        return Scan(codes, len(regions), tuple(regions))

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        return self.scan(grey).codes
