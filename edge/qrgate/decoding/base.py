"""The one interface every decoder backend implements."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

Point = tuple[int, int]
Corners = tuple[Point, Point, Point, Point]


@dataclass(frozen=True, slots=True)
class DecodedCode:
    text: str
    corners: Corners  # top-left, top-right, bottom-right, bottom-left, in frame pixels
    backend: str  # which decoder read it ("zxing", "zbar")


class Decoder(Protocol):
    name: str

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        """Every QR code readable in ``grey`` (H x W uint8, C-contiguous or a strided view).

        Decodes in place: no colour conversion and no copy of the frame. Never raises for image
        content; returns [] when nothing is readable.
        """


@dataclass(frozen=True, slots=True)
class Scan:
    """One decode pass: the codes read, and whether more QR symbols were located but not read."""

    codes: list[DecodedCode]
    # Symbol candidates whose finder patterns were found but whose data failed to decode; one
    # damaged code can yield several candidates, so this is "how much", not "how many codes".
    unreadable: int
    # Where those candidates are (corners in frame pixels), for a decoder that can say; the
    # cascade retries only there.
    regions: tuple[Corners, ...] = ()


@runtime_checkable
class DetectingDecoder(Decoder, Protocol):
    """A decoder that can tell "a QR is there but unreadable" from "no QR at all"."""

    def scan(self, grey: np.ndarray) -> Scan:
        """Like ``decode``, plus the located-but-unreadable QR symbol candidates."""


def image_corners(points: Iterable[tuple[float, float]]) -> Corners:
    """Four corner points ordered top-left, top-right, bottom-right, bottom-left as seen in the frame.

    Backends report corners in different orders (zxing-cpp in the symbol's own orientation, zbar
    as a convex hull); ordering them by where they sit in the image makes both backends agree
    whichever way the code is turned: clockwise from the corner nearest the frame's top-left.
    """
    pts = [(round(x), round(y)) for x, y in points]
    if len(pts) != 4:
        raise ValueError(f"a QR code has 4 corners, got {len(pts)}")
    cx = sum(x for x, _ in pts) / len(pts)
    cy = sum(y for _, y in pts) / len(pts)
    # With y pointing down, increasing atan2 angle runs clockwise on screen.
    pts.sort(key=lambda p: math.atan2(p[1] - cy, p[0] - cx))
    first = min(range(len(pts)), key=lambda i: pts[i][0] + pts[i][1])
    tl, tr, br, bl = (pts[(first + k) % 4] for k in range(4))
    return tl, tr, br, bl
