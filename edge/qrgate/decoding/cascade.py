"""The decoder cascade: zxing-cpp on the whole frame, a ladder of repairs on a located QR only.

zxing-cpp is the fastest decoder on an empty frame and reads the most codes, and it can tell
"a QR is there but unreadable" (``return_errors``) with the symbol's position. The cascade uses
exactly that: a frame zxing read, or one where it located nothing, costs what zxing alone costs.
Only a frame with a located-but-unreadable symbol goes on, and only the symbol's region (a view
of the frame, with a margin) is worked on: first zxing again on the region alone (its binariser
then adapts to the code, not the whole scene), then image fixes and the other decoders, cheapest
and most productive first, at most ``max_attempts`` of them, stopping at the first read.
``read_region`` runs the same ladder on a region the caller knows holds a code (the tracker's
last position), which is how codes zxing does not even locate get a second chance.

Thread-safe: no per-call state is kept on the instance apart from counters (under a lock), so
decode workers can share one cascade.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import repair
from .base import Corners, DecodedCode, Decoder, DetectingDecoder, Scan

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, end-exclusive
Fix = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One rung of the ladder: ``decoder`` on the region, after ``fix`` if there is one.

    ``scale`` is the fixed image's pixels per region pixel (2 after an upscale), to map corners back.
    """

    name: str
    decoder: Decoder
    fix: Fix | None = None
    scale: float = 1.0


def default_attempts(zxing: Decoder, zbar: Decoder | None = None, opencv: Decoder | None = None) -> list[Attempt]:
    """The repair ladder, most codes rescued per millisecond first, as measured on the synthetic
    gate scene (2020 regions over every category and three seeds; docs/performance.md has the
    table). Decoders that are not installed are left out.

    The first rungs rescue nearly everything the whole ladder does; the gate runs only the first
    ``DEFAULT_MAX_REPAIRS`` (factory). The last rungs read no code on the synthetic scene that an
    earlier rung did not, but real photos are not synthetic: ``qrgate scan``, with no deadline,
    runs them all. zxing on the bare region is not a rung: the sharpened region reads every code
    it does.
    """
    ladder = [
        Attempt("sharpen+zxing", zxing, repair.sharpen),
        Attempt("threshold+zxing", zxing, repair.adaptive_threshold),
        Attempt("upscale-sharpen+zxing", zxing, repair.upscale_sharpen, 2.0),
    ]
    if zbar is not None:
        ladder.append(Attempt("zbar", zbar))
    ladder.append(Attempt("deblur7+zxing", zxing, partial(repair.deblur_motion, length_px=7)))
    ladder.append(Attempt("deblur5+zxing", zxing, partial(repair.deblur_motion, length_px=5)))
    if opencv is not None:
        ladder.append(Attempt("upscale+opencv", opencv, repair.upscale, 2.0))
    if zbar is not None:
        ladder.append(Attempt("upscale+zbar", zbar, repair.upscale, 2.0))
    ladder.append(Attempt("contrast+zxing", zxing, repair.local_contrast))
    ladder.append(Attempt("otsu+zxing", zxing, repair.otsu_threshold))
    return ladder


def region_box(regions: Iterable[Corners], height: int, width: int, margin: float = 0.15) -> Box | None:
    """The bounding box of ``regions`` grown by ``margin`` of its larger side plus 8 px (the quiet
    zone, and slack for corners estimated from a symbol that did not decode), clipped to the frame;
    None when nothing of it is inside the frame."""
    xs: list[int] = []
    ys: list[int] = []
    for corners in regions:
        for x, y in corners:
            xs.append(x)
            ys.append(y)
    if not xs:
        return None
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = int(margin * max(x1 - x0, y1 - y0)) + 8
    box = (max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad + 1), min(height, y1 + pad + 1))
    if box[2] - box[0] < 16 or box[3] - box[1] < 16:
        return None
    return box


@dataclass(slots=True)
class CascadeStats:
    regions: int = 0  # regions handed to the repair ladder
    repaired: int = 0  # of those, read by one of its attempts
    attempts: int = 0  # attempts run in all
    reads_by: Counter[str] = field(default_factory=Counter)  # attempt name -> regions it read


class CascadeDecoder:
    """zxing-cpp on the frame; on a located-but-unreadable QR, the repair ladder on its region."""

    def __init__(self, primary: DetectingDecoder, attempts: Sequence[Attempt], *, max_attempts: int | None = None,
                 margin: float = 0.15) -> None:
        if max_attempts is not None and max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
        self.name = f"{primary.name}+repair"
        self._scan = primary.scan
        self._attempts = tuple(attempts[:max_attempts] if max_attempts is not None else attempts)
        self._margin = margin
        self._lock = threading.Lock()
        self.stats = CascadeStats()

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self._attempts

    def scan(self, grey: np.ndarray) -> Scan:
        """The primary's scan of the whole frame, with the ladder's reading of any unreadable region added."""
        scan = self._scan(grey)
        if scan.codes or not scan.regions:
            return scan
        box = region_box(scan.regions, grey.shape[0], grey.shape[1], self._margin)
        if box is None:
            return scan
        codes = self.read_region(grey, box)
        return Scan(codes, 0 if codes else scan.unreadable, () if codes else scan.regions)

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        return self.scan(grey).codes

    def read_region(self, grey: np.ndarray, box: Box) -> list[DecodedCode]:
        """Run the ladder on ``grey[box]`` until one attempt reads a code; corners in frame pixels."""
        x0, y0, x1, y1 = box
        region = grey[y0:y1, x0:x1]
        tried = 0
        codes: list[DecodedCode] = []
        winner = ""
        for attempt in self._attempts:
            tried += 1
            image = region if attempt.fix is None else attempt.fix(region)
            found = attempt.decoder.decode(image)
            if found:
                codes = [_to_frame(code, attempt, x0, y0) for code in found]
                winner = attempt.name
                break
        with self._lock:
            stats = self.stats
            stats.regions += 1
            stats.attempts += tried
            if codes:
                stats.repaired += 1
                stats.reads_by[winner] += 1
        return codes


def _to_frame(code: DecodedCode, attempt: Attempt, x0: int, y0: int) -> DecodedCode:
    scale = attempt.scale
    corners = tuple((round(x / scale) + x0, round(y / scale) + y0) for x, y in code.corners)
    return DecodedCode(code.text, corners, attempt.name)  # type: ignore[arg-type]  # four points in, four out
