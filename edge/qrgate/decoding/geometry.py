"""Boxes in frame pixels: around a located symbol (``region_box``, ``located_boxes``) and how two
of them relate. The cascade, the tracker, the pipeline, the photo decoder and the small-code look
share them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Corners

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, end-exclusive


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


def located_boxes(regions: Iterable[Corners], height: int, width: int, margin: float = 0.15) -> list[Box]:
    """One box per located symbol (``region_box`` of its corners), leaving out a box that lies
    mostly inside one already listed (zxing may report a symbol several times). Square-ish
    boxes come first, largest first, then the others: a QR symbol is square, and even tilted
    25 degrees its outline stays within 1.5:1, while the long thin quadrilaterals zxing reports
    around a blurred code are finder patterns of two symbols paired by mistake.

    Each symbol gets its own box: the box around all of them would, with a second symbol or a
    false finder pattern elsewhere in the frame, hand the ladder most of the frame.
    """
    boxes = [box for corners in regions if (box := region_box((corners,), height, width, margin)) is not None]

    def rank(box: Box) -> tuple[bool, int]:
        w, h = box[2] - box[0], box[3] - box[1]
        return max(w, h) > 1.5 * min(w, h), -w * h

    boxes.sort(key=rank)
    kept: list[Box] = []
    for box in boxes:
        if all(box_overlap(box, other) < 0.8 * box_area(box) for other in kept):
            kept.append(box)
    return kept


def box_area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def box_overlap(a: Box, b: Box) -> int:
    """The area the two boxes share (0 when they do not touch)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def box_centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
