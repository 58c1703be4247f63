"""What every live frame source shares: a capture thread feeding a latest-frame slot, one reader."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import ClassVar, Self

from ..errors import CameraUnavailable, FrameSourceError
from .base import Frame
from .capture_thread import CaptureFn, CaptureThread
from .slot import LatestFrameSlot

log = logging.getLogger(__name__)


class LiveFrameSource(ABC):
    """A FrameSource that captures on its own thread; latest frame wins.

    Life cycle (as Picamera2's own): ``start()`` opens the device, ``stop()`` stops the capture
    thread and frees the device, ``start()`` may open it again (how the service recovers a camera
    that failed), ``close()`` is final. Frame indices and ``frames_dropped`` carry on across a
    stop and a start: they count since the source was made.

    A subclass implements ``_open``: open the device and hand the capture function to
    ``_start_capture``; and ``_release_device``: free it again. ``_lock`` keeps ``start``,
    ``stop`` and ``close`` from interleaving; both hooks run under it.
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
        self._running = False
        self._stopped = False  # stop() was called since the last start
        self._closed = False
        self._dropped_before = 0  # frames dropped by the slots of earlier runs (before a stop())
        self._resume_index = 0  # the first frame index of the next run

    def start(self) -> None:
        """Open the device and begin capturing; nothing if running. Raises CameraUnavailable/FrameSourceError.

        After a failed start the source is stopped, and ``start()`` may be tried again."""
        with self._lock:
            if self._closed:
                raise FrameSourceError(f"{self._label} is closed")
            if self._running:
                return
            self._reap_blocked_capture()
            self._open()
            self._running, self._stopped = True, False

    @abstractmethod
    def _open(self) -> None:
        """Open the device and call ``_start_capture``; under ``_lock``, only while stopped.
        Raises CameraUnavailable/FrameSourceError, leaving nothing open."""

    def _start_capture(self, height: int, width: int, capture: CaptureFn) -> None:
        """Run ``capture`` on a new capture thread into ``height`` x ``width`` frames; once per ``_open``."""
        self._slot = LatestFrameSlot(height, width)
        self._thread = CaptureThread(self.name, self._slot, capture, first_index=self._resume_index)
        self._thread.start()

    def _release_device(self, capture_stopped: bool) -> None:  # noqa: B027  (optional: most have a device)
        """Free the device; called under ``_lock`` by ``stop()`` (once the capture thread has
        stopped) and by ``close()`` (after it was told to stop). ``capture_stopped`` is False when
        the thread is still blocked in a capture call. A source with no device has nothing to do."""

    def read(self, timeout: float = 1.0) -> Frame | None:
        slot = self._slot
        if slot is None:
            raise FrameSourceError(f"{self._label} is {self._state()}")
        return slot.take(timeout)

    def _state(self) -> str:
        """What a source that cannot be read is: "closed", "stopped" or "not started"."""
        return "closed" if self._closed else "stopped" if self._stopped else "not started"

    @property
    def frames_dropped(self) -> int:
        slot = self._slot
        return self._dropped_before + (slot.dropped if slot is not None else 0)

    def stop(self) -> None:
        """Stop capturing and free the device; ``start()`` opens it again. Idempotent; nothing once closed."""
        with self._lock:
            if not self._closed:
                self._stop_capture(final=False)

    def close(self) -> None:
        """Stop capturing and free the device for good; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_capture(final=True)

    def _stop_capture(self, *, final: bool) -> None:
        self._running, self._stopped = False, True
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.close()  # wakes a blocked reader
        thread = self._thread
        stopped = thread is None or thread.stop()
        if slot is not None:
            self._dropped_before += slot.dropped  # once the thread stopped publishing into it
        if thread is not None:
            self._resume_index = thread.next_index
        if stopped or final:
            self._thread = None
            self._release_device(stopped)
        else:
            # Freeing a device another thread is reading can crash the camera library: the next
            # start() frees it once the thread has come back (_reap_blocked_capture).
            log.warning("%s: the capture thread is blocked in the camera driver; the device stays open", self._label)

    def _reap_blocked_capture(self) -> None:
        """Free what a capture thread still blocked at the last ``stop()`` held, or refuse to start."""
        thread = self._thread
        if thread is None:
            return
        if not thread.stop():
            raise CameraUnavailable(f"{self._label}: the last capture is still blocked in the camera driver")
        self._resume_index = thread.next_index
        self._thread = None
        self._release_device(True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
