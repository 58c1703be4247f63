"""ZBar through pyzbar, restricted to QR: the second backend and the fallback for hard frames.

pyzbar takes the ndarray directly (no colour conversion: the frame is already grey) but hands
ZBar a C-ordered bytes copy of it (``ndarray.tobytes()``), which also linearises a strided view.
That copy is 300 KB for 640x480, tens of microseconds against a ZBar scan of several
milliseconds, so it is accepted rather than bypassing pyzbar's public API with raw ctypes.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecoderUnavailable
from .base import DecodedCode, image_corners

NAME = "zbar"


class ZbarDecoder:
    """QR-only ZBar reader. Raises DecoderUnavailable at construction when libzbar is missing."""

    name = NAME

    def __init__(self) -> None:
        try:
            # pyzbar loads libzbar with ctypes at import time and raises ImportError if it is absent.
            from pyzbar import pyzbar
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("pyzbar"):
                raise DecoderUnavailable("the pyzbar package is not installed (pip install pyzbar)") from exc
            raise DecoderUnavailable(f"pyzbar cannot be imported: {exc}") from exc
        except (ImportError, OSError) as exc:
            raise DecoderUnavailable(
                f"libzbar cannot be loaded ({exc}): install libzbar0 (sudo apt install libzbar0)"
            ) from exc
        self._decode = pyzbar.decode
        self._symbols = [pyzbar.ZBarSymbol.QRCODE]

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        codes = []
        for symbol in self._decode(grey, symbols=self._symbols):
            # ZBar converts QR text to UTF-8 itself (binary payloads come out as Latin-1 code
            # points); "replace" keeps a corrupt byte sequence from ever raising here.
            text = symbol.data.decode("utf-8", errors="replace")
            if len(symbol.polygon) == 4:
                corners = image_corners(symbol.polygon)
            else:  # a degenerate hull (collinear points): fall back to the bounding box
                left, top, width, height = symbol.rect
                corners = ((left, top), (left + width, top), (left + width, top + height), (left, top + height))
            codes.append(DecodedCode(text, corners, NAME))
        return codes
