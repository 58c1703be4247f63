"""zxing-cpp, restricted to QR: the default backend (fast on empty frames, reads more codes than zbar).

The frame goes to zxing-cpp through the buffer protocol with its strides, so neither a
C-contiguous array nor a strided view (the Y plane of a padded YUV420 buffer) is copied: the
library reads rows at the given row stride. Its only per-call allocation proportional to the
frame is its own binarised image (1 byte per pixel), inherent to the algorithm.
"""

from __future__ import annotations

import numpy as np
import zxingcpp

from .base import Corners, DecodedCode, Scan, image_corners

NAME = "zxing"


class ZxingDecoder:
    """QR-only zxing-cpp reader.

    ``try_rotate``, ``try_invert`` and ``try_downscale`` are off by default: QR detection is
    rotation-invariant already, passes are dark-on-light, and a gate camera frames codes at a
    readable size, so each extra pass would only add cost to every empty frame.
    """

    name = NAME

    def __init__(self, *, try_rotate: bool = False, try_invert: bool = False, try_downscale: bool = False) -> None:
        self._options = {
            "formats": zxingcpp.BarcodeFormat.QRCode,
            "try_rotate": try_rotate,
            "try_invert": try_invert,
            "try_downscale": try_downscale,
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
            corners = image_corners((p.x, p.y) for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left))
            if barcode.valid:
                codes.append(DecodedCode(barcode.text, corners, NAME))
            else:
                regions.append(corners)
        return Scan(codes, len(regions), tuple(regions))

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        return self.scan(grey).codes
