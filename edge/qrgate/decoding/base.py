"""The one interface every decoder backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

Point = tuple[int, int]


@dataclass(frozen=True, slots=True)
class DecodedCode:
    text: str
    corners: tuple[Point, Point, Point, Point]  # top-left, top-right, bottom-right, bottom-left, in frame pixels
    backend: str  # which decoder read it ("zxing", "zbar")


class Decoder(Protocol):
    name: str

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        """Every QR code readable in ``grey`` (H x W uint8, C-contiguous or a strided view).

        Decodes in place: no colour conversion and no copy of the frame. Never raises for image
        content; returns [] when nothing is readable.
        """
