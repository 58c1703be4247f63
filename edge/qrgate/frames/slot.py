"""The hand-off between a capture thread and the one reader of a live source: latest frame wins."""

from __future__ import annotations

import threading
import time

import numpy as np

from ..errors import FrameSourceError
from .base import Frame


class LatestFrameSlot:
    """Holds at most one unread frame; a newer frame replaces it and the replaced one is counted dropped.

    The slot also owns the grey buffers frames are written into, so the capture path allocates
    nothing per frame. Three buffers suffice: one the reader may still be using (a frame is valid
    until the reader's next ``take``), one waiting in the slot, one being filled. ``acquire``
    always returns a buffer that is neither of the first two.

    One producer thread calls ``acquire``/``publish``/``fail``/``finish``; one reader calls ``take``.
    """

    def __init__(self, height: int, width: int) -> None:
        self._buffers = [np.zeros((height, width), np.uint8) for _ in range(3)]
        self._cond = threading.Condition()
        self._waiting: Frame | None = None  # published, not yet taken
        self._held: np.ndarray | None = None  # buffer of the frame the reader last took
        self._error: FrameSourceError | None = None
        self._finished = False
        self._closed = False
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    def acquire(self) -> np.ndarray:
        """A buffer the producer may fill: not waiting in the slot and not held by the reader."""
        with self._cond:
            busy = (self._held, self._waiting.grey if self._waiting is not None else None)
            return next(b for b in self._buffers if not any(b is x for x in busy))

    def publish(self, grey: np.ndarray, captured_at: float, index: int) -> None:
        """Offer a filled buffer (from ``acquire``) as the newest frame."""
        with self._cond:
            if self._waiting is not None:
                self._dropped += 1
            self._waiting = Frame(grey, captured_at, index)
            self._cond.notify()

    def fail(self, error: FrameSourceError) -> None:
        """The source failed for good: the reader's next ``take`` raises ``error``."""
        with self._cond:
            self._error = error
            self._cond.notify()

    def finish(self) -> None:
        """A finite source ended: ``take`` returns the last waiting frame, then raises EOFError."""
        with self._cond:
            self._finished = True
            self._cond.notify()

    def close(self) -> None:
        """Wake a blocked reader; every later ``take`` raises FrameSourceError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame | None:
        """The newest unread frame, waiting up to ``timeout`` s; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._held = None  # the previous frame's buffer is the producer's again
            while True:
                if self._closed:
                    raise FrameSourceError("the frame source is closed")
                if self._error is not None:
                    raise self._error
                if self._waiting is not None:
                    frame, self._waiting = self._waiting, None
                    self._held = frame.grey
                    return frame
                if self._finished:
                    raise EOFError("the frame source has no more frames")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
