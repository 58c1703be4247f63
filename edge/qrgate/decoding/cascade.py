"""The decoder cascade: zxing-cpp on the whole frame, a ladder of repairs on a located QR only.

zxing-cpp is the fastest decoder on an empty frame and reads the most codes, and it can tell
"a QR is there but unreadable" (``return_errors``) with the symbol's position. The cascade uses
exactly that: a frame zxing read, or one where it located nothing, costs what zxing alone costs.
Only a frame with a located-but-unreadable symbol goes on, and only the symbol's region (a view
of the frame, with a margin) is worked on: first zxing again on the region alone (its binariser
then adapts to the code, not the whole scene), then image fixes and the other decoders, cheapest
and most productive first, at most ``max_attempts`` of them, stopping at the first read.
``read_region`` runs the same ladder on a region the caller knows holds a code (the tracker's
last position). Where zxing located nothing, ``read_unlocated`` locates by texture instead (the
small-code look's map of dense edges both ways) and ladders the largest code-like box: a frame
without code-like texture still costs zxing and the look (a 320 px texture map) only.

Thread-safe: no per-call state is kept on the instance apart from counters (under a lock) and the
optional ``StaticTexture`` (under its own), so decode workers can share one cascade.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import repair
from .base import DecodedCode, Decoder, DetectingDecoder, Scan
from .geometry import Box, box_area, box_centre, box_overlap, located_boxes
from .small_codes import SmallCodeLook, StaticTexture

Fix = Callable[[np.ndarray], np.ndarray | None]  # None: the fix does not apply to this region


@dataclass(frozen=True, slots=True)
class Attempt:
    """One rung of the ladder: ``decoder`` on the region, after ``fix`` if there is one.

    ``scale`` is the fixed image's pixels per region pixel (2 after an upscale), to map corners back.
    """

    name: str
    decoder: Decoder
    fix: Fix | None = None
    scale: float = 1.0


def default_attempts(zxing: Decoder, zbar: Decoder | None = None, opencv: Decoder | None = None,
                     histogram: Decoder | None = None, warped: Decoder | None = None) -> list[Attempt]:
    """The repair ladder, most codes rescued per millisecond first, as measured on the synthetic
    gate scene (2020 regions over every category and three seeds; docs/performance.md has the
    table). Decoders that are not installed are left out.

    The first rungs rescue nearly everything the whole ladder does; the gate runs only the first
    ``decoder.max_repairs`` (config.py) of them. The last rungs read no code on the synthetic scene that an
    earlier rung did not, but real photos are not synthetic: ``qrgate scan``, with no deadline,
    runs them all. zxing on the bare region is not a rung: the sharpened region reads every code
    it does.

    Two rungs are there for real photos (``histogram``, ``warped``; none if not given): they read
    nothing on the synthetic regions, and on ../shared/qr-photos' regions 4 and 21 that no earlier
    rung read (a picture inside the modules; labels on wrinkled fabric), at a median 0.4 and 0.2 ms
    on the synthetic regions they do not read, so they are the gate's last rungs (with ZBar, the
    7th and 8th).
    """
    ladder = [
        Attempt("sharpen+zxing", zxing, repair.sharpen),
        Attempt("threshold+zxing", zxing, repair.adaptive_threshold),
        Attempt("deblur+zxing", zxing, repair.deblur_estimated),
        Attempt("upscale-sharpen+zxing", zxing, repair.upscale_sharpen, 2.0),
    ]
    if zbar is not None:
        ladder.append(Attempt("zbar", zbar))
        ladder.append(Attempt("upscale+zbar", zbar, repair.upscale, 2.0))
    if histogram is not None:
        ladder.append(Attempt("smooth+histogram+zxing", histogram, repair.smooth))
    if warped is not None:
        ladder.append(Attempt("warped+zxing", warped))
    ladder.append(Attempt("range+zxing", zxing, repair.local_range, 2.0))
    if zbar is not None:
        ladder.append(Attempt("range+zbar", zbar, repair.local_range, 2.0))
    if opencv is not None:
        ladder.append(Attempt("upscale+opencv", opencv, repair.upscale, 2.0))
    ladder.append(Attempt("contrast+zxing", zxing, repair.local_contrast))
    ladder.append(Attempt("otsu+zxing", zxing, repair.otsu_threshold))
    return ladder


def wide_attempts(zbar: Decoder | None) -> list[Attempt]:
    """The wide look's attempts (``CascadeDecoder.read_around``): ZBar on the area upscaled x2.
    ZBar finds finder patterns by edges along scanlines, which survive a glare veil that has
    lifted the dark modules towards white; zxing's block binariser loses them (on the synthetic
    glare frames where zxing located only one finder, ZBar read the code around it and no
    zxing rung did: docs/performance.md)."""
    return [] if zbar is None else [Attempt("wide:upscale+zbar", zbar, repair.upscale, 2.0)]


@dataclass(slots=True)
class CascadeStats:
    regions: int = 0  # regions handed to the repair ladder
    repaired: int = 0  # of those, read by one of its attempts
    attempts: int = 0  # attempts run in all
    reads_by: Counter[str] = field(default_factory=Counter)  # attempt name -> regions it read
    small_reads: int = 0  # frames nothing was located in, read by the small-code look
    texture_reads: int = 0  # frames read by the ladder on code-like texture zxing did not locate


class CascadeDecoder:
    """zxing-cpp on the frame; on a located-but-unreadable QR, the repair ladder on its region."""

    WIDE_GROWTH = 3.0
    WIDE_MAX_PX = 360  # upscaled x2 for ZBar, 720 px: about a whole-frame ZBar call
    # Regions are worked on at most this size (longer side): a 640x480 frame's code at arm's
    # length (33-57 modules of 2.5-4.5 px, plus the margin) is 120-330 px.
    REGION_MAX_PX = 640
    REFERENCE_WIDTH = 640

    def __init__(self, primary: DetectingDecoder, attempts: Sequence[Attempt], *, max_attempts: int | None = None,
                 margin: float = 0.15, max_regions: int = 2, wide_attempts: Sequence[Attempt] = (),
                 small_look: SmallCodeLook | None = None, static_texture: StaticTexture | None = None) -> None:
        """``max_regions``: located-but-unreadable symbols of one frame the ladder is run on,
        largest first (a second one is usually a second visitor's code, or texture in the scene
        that zxing took for a finder pattern). ``wide_attempts``: what the wide look runs
        (``read_around``) when the ladder read nothing; none by default. ``small_look``: what
        runs on a frame where zxing read and located nothing (decoding/small_codes.py); none
        by default."""
        if max_attempts is not None and max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
        if max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.max_regions = max_regions
        self.name = f"{primary.name}+repair"
        self._scan = primary.scan
        self._attempts = tuple(attempts[:max_attempts] if max_attempts is not None else attempts)
        self._margin = margin
        self._wide_attempts = tuple(wide_attempts)
        self._small_look = small_look
        self._static_texture = static_texture
        self._lock = threading.Lock()
        self.stats = CascadeStats()

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self._attempts

    @property
    def small_look(self) -> SmallCodeLook | None:
        return self._small_look

    def primary_scan(self, grey: np.ndarray) -> Scan:
        """The primary decoder's scan of the whole frame alone (no ladder)."""
        return self._scan(grey)

    def scan(self, grey: np.ndarray) -> Scan:
        """The primary's scan of the whole frame, with the ladder's reading of any unreadable region added."""
        scan = self._scan(grey)
        if scan.codes:
            return scan
        codes: list[DecodedCode] = []
        boxes = located_boxes(scan.regions, grey.shape[0], grey.shape[1], self._margin)[:self.max_regions]
        for box in boxes:
            codes = self.read_region(grey, box)
            if codes:
                break
        if not codes and boxes and self._wide_attempts:
            codes = self.read_around(grey, boxes[0])
        if not codes:
            # Also after a failed ladder: a code too small to locate often sits beside a false
            # finder pattern zxing did locate (4 of the 20 halved photos it adds are such).
            codes = self.read_unlocated(grey, boxes)
        return Scan(codes, 0 if codes else scan.unreadable, () if codes else scan.regions)

    def read_unlocated(self, grey: np.ndarray, laddered: Sequence[Box] = ()) -> list[DecodedCode]:
        """The codes zxing-cpp did not locate: the small-code look (decoding/small_codes.py), then
        the ladder on the largest code-like box it found and could not read (the texture ladder).

        zxing-cpp locates a code by its finder patterns; a blurred, streaked, moiré-striped or
        partly covered code often keeps none it can find, and then no rung ever ran: at 2304x1296,
        on the synthetic blur and motion frames nothing read, the ladder on the code's true box
        read 6 and 6 more (docs/performance.md). The look's texture map finds such a code as it
        finds a small one, as a square of dense edges both ways; a box whose edges are
        ``STRONG_EDGES`` or denser is laddered, unless it is one of ``laddered`` (already tried,
        IoU 0.7) or, with ``static_texture``, clutter of the scene tried a moment ago.
        """
        if self._small_look is None:
            return []
        codes, strong = self._small_look.look(grey)
        if codes:
            with self._lock:
                self.stats.small_reads += 1
            return codes
        width = grey.shape[1]
        memory = self._static_texture
        for box, edges in strong[:1]:
            if any(_iou(box, done) >= 0.7 for done in laddered):
                continue
            if memory is not None and not memory.fresh(box, edges, width):
                continue
            codes = self.read_region(grey, box)
            if codes:
                if memory is not None:
                    memory.read(box, width)
                with self._lock:
                    self.stats.texture_reads += 1
                return codes
            if memory is not None:
                memory.failed(box, edges, width)
        return []

    def read_around(self, grey: np.ndarray, box: Box) -> list[DecodedCode]:
        """The wide look: ``wide_attempts`` on a square ``WIDE_GROWTH`` times the located box's
        larger side (at most ``WIDE_MAX_PX`` of a 640 px wide frame, as much more in a wider one:
        the region is shrunk to ``REGION_MAX_PX`` anyway), centred on it.

        zxing locates a symbol it cannot frame by what it found of it, which under glare is often
        a single finder pattern: the box then covers a corner of the code, and every rung run on
        it fails. The code lies around that box, within about twice its size in some direction.
        """
        height, width = grey.shape
        side = min(self.WIDE_MAX_PX * max(1.0, width / 640), self.WIDE_GROWTH * max(box[2] - box[0], box[3] - box[1]))
        cx, cy = box_centre(box)
        wide = (max(0, int(cx - side / 2)), max(0, int(cy - side / 2)),
                min(width, int(cx + side / 2)), min(height, int(cy + side / 2)))
        if box_area(wide) < 2 * box_area(box):
            return []  # hardly wider than the box the ladder has just tried
        return self.read_region(grey, wide, self._wide_attempts)

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        return self.scan(grey).codes

    def read_region(self, grey: np.ndarray, box: Box, attempts: Sequence[Attempt] | None = None) -> list[DecodedCode]:
        """Run the ladder (or ``attempts``) on ``grey[box]`` until one attempt reads a code;
        corners in frame pixels.

        A region larger than ``REGION_MAX_PX`` is first shrunk to it (area averaging): the rungs'
        filters are sized for the modules of a code at arm's length in a 640x480 frame (2-6 px),
        and a code of a 1280x720 or full-resolution frame, or one held close, has modules several
        times larger, which a 1.5 px unsharp mask or a 31 px threshold window does not touch.
        Shrinking brings its modules back into that range and makes every rung cheaper.
        """
        x0, y0, x1, y1 = box
        region = grey[y0:y1, x0:x1]
        shrink = min(1.0, self.REGION_MAX_PX / max(x1 - x0, y1 - y0), self.REFERENCE_WIDTH / max(grey.shape))
        if shrink < 1.0:
            region = cv2.resize(region, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        tried = 0
        codes: list[DecodedCode] = []
        winner = ""
        for attempt in self._attempts if attempts is None else attempts:
            image = region if attempt.fix is None else attempt.fix(region)
            if image is None:  # the fix does not apply to this region (no streak to undo)
                continue
            tried += 1
            found = attempt.decoder.decode(image)
            if found:
                codes = [_to_frame(code, attempt.scale * shrink, attempt.name, x0, y0) for code in found]
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


def _iou(a: Box, b: Box) -> float:
    shared = box_overlap(a, b)
    return shared / (box_area(a) + box_area(b) - shared)


def _to_frame(code: DecodedCode, scale: float, name: str, x0: int, y0: int) -> DecodedCode:
    """``code`` read in an image ``scale`` times the region at (x0, y0), in frame pixels."""
    corners = tuple((round(x / scale) + x0, round(y / scale) + y0) for x, y in code.corners)
    return DecodedCode(code.text, corners, name)  # type: ignore[arg-type]  # four points in, four out
