"""The capture loop every live source runs on its own thread, feeding a LatestFrameSlot."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from ..errors import CameraUnavailable, FrameSourceError
from .slot import LatestFrameSlot

log = logging.getLogger(__name__)

# Fills ``grey`` with frame number ``index`` and returns its capture time (monotonic seconds), or
# None when no frame came this time (a timeout: the loop checks for stop and calls again). Raises
# FrameSourceError when the source failed for good and EOFError when a finite source ended.
CaptureFn = Callable[[np.ndarray, int], "float | None"]


class CaptureThread:
    """Calls ``capture`` in a loop until stopped, publishing each frame to ``slot``.

    Frames are numbered from ``first_index`` (a restarted source carries on where its last thread stopped).
    """

    def __init__(self, name: str, slot: LatestFrameSlot, capture: CaptureFn, first_index: int = 0) -> None:
        self._name = name
        self._slot = slot
        self._capture = capture
        self._index = first_index
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)

    @property
    def stopping(self) -> threading.Event:
        """Set when the loop should end; a blocking capture function may wait on it."""
        return self._stop

    @property
    def next_index(self) -> int:
        """The index the next published frame gets: where a successor thread should start counting."""
        return self._index

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the loop to end and wait for it; False if it is still blocked in the capture call."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                grey = self._slot.acquire()
                captured_at = self._capture(grey, self._index)
                if captured_at is None:
                    continue
                self._slot.publish(grey, captured_at, self._index)
                self._index += 1
        except EOFError:
            self._slot.finish()
        except FrameSourceError as exc:
            self._slot.fail(exc)
        except Exception as exc:  # a camera library's own error: the reader must learn of it, not lose it here
            log.exception("%s capture thread failed", self._name)
            self._slot.fail(CameraUnavailable(f"{self._name} capture failed: {exc}"))
