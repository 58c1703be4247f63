"""The one interface every frame source implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(slots=True)
class Frame:
    """One grey image and when it was captured.

    ``grey`` is H x W uint8 in a buffer the source reuses (a live source's slot buffer, into which the
    camera thread copied the lores Y plane): consumers must not keep it past the next ``read()``.
    """

    grey: np.ndarray
    captured_at: float  # time.monotonic() seconds at capture (sensor timestamp where available)
    index: int  # 0-based count of frames produced by the source, including dropped ones


class FrameSource(Protocol):
    """A camera or stand-in. Context manager.

    ``start()`` opens the device, ``stop()`` frees it and ``start()`` may open it again (how the
    service recovers a camera that failed); frame indices and ``frames_dropped`` carry on across
    that. ``close()`` is final and idempotent: ``start()`` after it raises FrameSourceError.

    Live sources run their capture loop on their own thread and keep only the newest frame
    ("latest frame wins"): a frame not read before the next one arrives is dropped and counted.
    """

    name: str

    @property
    def live(self) -> bool:
        """Whether frames are stamped with time.monotonic() at capture (a camera), not simulated time."""

    def start(self) -> None:
        """Open the device and begin capturing; nothing if running. Raises CameraUnavailable/FrameSourceError,
        after which the source is stopped and ``start()`` may be tried again."""

    def stop(self) -> None:
        """Stop capturing and free the device, not for good; idempotent. ``read`` raises until the next ``start()``."""

    def read(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet returned, waiting up to ``timeout`` s; None if none came.

        Raises FrameSourceError when the source has failed for good (camera vanished) and
        EOFError when a finite source (files, video, scripted scene) is exhausted.
        """

    @property
    def frames_dropped(self) -> int:
        """Frames captured but replaced by a newer one before anyone read them, since the source was made."""

    def close(self) -> None:
        """Stop capturing and free the device for good; idempotent."""

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...
