"""What every live frame source shares: a capture thread feeding a latest-frame slot, one reader."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import ClassVar, Self

from ..errors import FrameSourceError
from .base import Frame
from .capture_thread import CaptureFn, CaptureThread
from .slot import LatestFrameSlot


class LiveFrameSource(ABC):
    """A FrameSource that captures on its own thread; latest frame wins.

    A subclass's ``start()`` opens its device under ``_lock`` and hands the capture function to
    ``_start_capture``; ``close()`` stops the thread, then lets the subclass free the device in
    ``_release_device``. ``_lock`` keeps ``start`` and ``close`` from interleaving.
    """

    name: str
    _label: ClassVar[str]  # how messages name the source, e.g. "the USB camera source"

    @property
    def live(self) -> bool:
        """Frames carry time.monotonic() at capture (a subclass that simulates time says otherwise)."""
        return True

    def __init__(self) -> None:
        self._slot: LatestFrameSlot | None = None
        self._thread: CaptureThread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @abstractmethod
    def start(self) -> None:
        """Open the device and call ``_start_capture``. Raises CameraUnavailable/FrameSourceError."""

    def _start_capture(self, height: int, width: int, capture: CaptureFn) -> None:
        """Run ``capture`` on the capture thread into ``height`` x ``width`` frames; once, under ``_lock``."""
        self._slot = LatestFrameSlot(height, width)
        self._thread = CaptureThread(self.name, self._slot, capture)
        self._thread.start()

    def _release_device(self, capture_stopped: bool) -> None:  # noqa: B027  (optional: most have a device)
        """Free the device; called once by ``close()`` under ``_lock``, after the capture thread was
        told to stop. ``capture_stopped`` is False when the thread is still blocked in a capture
        call. A source with no device has nothing to do."""

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._slot is None:
            raise FrameSourceError(f"{self._label} is not started")
        return self._slot.take(timeout)

    @property
    def frames_dropped(self) -> int:
        return self._slot.dropped if self._slot is not None else 0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._slot is not None:
                self._slot.close()
            capture_stopped = self._thread is None or self._thread.stop()
            self._release_device(capture_stopped)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
