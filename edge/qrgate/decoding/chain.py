"""A primary decoder with a second opinion for the frames it could not read."""

from __future__ import annotations

import numpy as np

from .base import DecodedCode, Decoder, DetectingDecoder


class FallbackDecoder:
    """Reads with ``primary``; asks ``fallback`` only about frames the primary could not read.

    With a primary that reports located-but-unreadable symbols (zxing-cpp), the fallback runs only
    when the primary read nothing AND located a QR it could not decode: empty frames, the vast
    majority at a gate, cost exactly what the primary alone costs.

    A primary that cannot report that (zbar) gets the fallback on every frame it read nothing in.
    No pre-check could gate it more cheaply: the only fallback that makes sense behind zbar is
    zxing-cpp, which on an empty frame is already cheaper than any detector one could run first.
    """

    def __init__(self, primary: Decoder, fallback: Decoder) -> None:
        self.name = f"{primary.name}+{fallback.name}"
        self._primary = primary
        self._scan = primary.scan if isinstance(primary, DetectingDecoder) else None
        self._fallback = fallback
        self.fallback_calls = 0  # frames handed to the fallback
        self.fallback_reads = 0  # of those, frames where the fallback read at least one code

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        if self._scan is not None:
            scan = self._scan(grey)
            if scan.codes or not scan.unreadable:
                return scan.codes
        else:
            codes = self._primary.decode(grey)
            if codes:
                return codes
        self.fallback_calls += 1
        codes = self._fallback.decode(grey)
        if codes:
            self.fallback_reads += 1
        return codes
