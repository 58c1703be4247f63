"""What the bench's sections share: timing a call per item, the naive baseline, MET / NOT MET."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import cv2
import numpy as np

T = TypeVar("T")


class ZbarSymbol(Protocol):
    """What the bench reads of a result of ``pyzbar.decode`` (pyzbar ships no type information)."""

    @property
    def data(self) -> bytes: ...


def time_each(function: Callable[[T], object], items: Sequence[T], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        for item in items:
            start = time.perf_counter()
            function(item)
            samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def naive_baseline() -> Callable[[np.ndarray], list[ZbarSymbol]]:
    from pyzbar import pyzbar

    def decode(rgb: np.ndarray) -> list[ZbarSymbol]:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        symbols: list[ZbarSymbol] = pyzbar.decode(grey)  # every symbology, as a first prototype would
        return symbols

    return decode


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
