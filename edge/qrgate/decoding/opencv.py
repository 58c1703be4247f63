"""OpenCV's QR reader (``cv2.QRCodeDetectorAruco``): a third opinion, used on code regions only.

Alone it is the slowest and weakest of the three on gate frames (about 3 ms on an empty 640x480
frame and a lower decode rate than zbar), so it is never run on a whole frame in the capture loop.
It is part of the cascade's repair ladder because its detector (ArUco-style contour finding, not
finder-pattern scan lines) fails differently from zxing-cpp's and ZBar's.

``QRCodeDetectorAruco`` objects keep per-call state and are not documented as thread-safe, so each
thread gets its own (constructing one costs about a microsecond).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from .base import DecodedCode, image_corners

NAME = "opencv"


class OpenCvDecoder:
    """QR reader on OpenCV's ArUco-based detector; safe to share between threads."""

    name = NAME

    def __init__(self) -> None:
        self._local = threading.local()
        # OpenCV's QR decoder logs a line on stderr for every symbol it cannot decode ("QRcode mode
        # 13 is not supported!"): a hostile or odd code held up would write one per frame into the
        # journal. Its answer is already in what decode returns, so its log is silenced.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

    def _detector(self) -> cv2.QRCodeDetectorAruco:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = cv2.QRCodeDetectorAruco()
        return detector

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        try:
            found, texts, points, _ = self._detector().detectAndDecodeBytesMulti(grey)
        except cv2.error:  # OpenCV asserts on degenerate input (e.g. a few pixels): nothing readable
            return []
        if not found or points is None:
            return []
        codes = []
        for raw, quad in zip(texts, points, strict=True):
            if not raw:  # located but not decoded
                continue
            text = raw.decode("utf-8", errors="replace")
            codes.append(DecodedCode(text, image_corners(quad.tolist()), NAME))
        return codes
