"""Frame sources built on OpenCV: a USB (UVC) camera, a list of image files, a video file."""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import cv2
import numpy as np

from ..errors import CameraUnavailable, FrameSourceError
from .base import Frame
from .live import LiveFrameSource

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp"})


def _to_grey(image: np.ndarray, grey: np.ndarray) -> None:
    """Write ``image`` (grey, or BGR as OpenCV delivers colour) into the grey buffer ``grey``."""
    if image.ndim == 2:
        np.copyto(grey, image)
    else:
        cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=grey)


class UsbCamera(LiveFrameSource):
    """A V4L2 (UVC) camera through cv2.VideoCapture, on its own capture thread; latest frame wins.

    ``device`` is a V4L2 index or ``/dev/video*`` path (opened with the V4L2 backend on Linux), or
    any other string OpenCV can open as a live stream (``rtsp://`` or ``http://`` network cameras,
    through FFmpeg). OpenCV delivers BGR; the thread converts it to grey into the frame buffer
    with one cvtColor (0.1 ms at 640x480 on the development machine). Taking the Y channel of raw YUYV
    instead (CAP_PROP_CONVERT_RGB=0) would skip OpenCV's YUYV->BGR step, but the raw buffer's
    layout differs between OpenCV versions and could not be verified without a camera here.
    """

    name = "usb"
    _label = "the USB camera source"

    def __init__(
        self,
        device: int | str = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        *,
        stall_timeout_s: float = 3.0,
    ) -> None:
        super().__init__()
        self._device = device
        self._size = (width, height)
        self._fps = fps
        self._stall_timeout_s = stall_timeout_s
        self._cap: cv2.VideoCapture | None = None
        self._colour: np.ndarray | None = None  # reused decode buffer for BGR frames
        self._last_frame_at = 0.0

    def _api(self) -> int:
        v4l2_device = isinstance(self._device, int) or self._device.startswith("/dev/video")
        return cv2.CAP_V4L2 if v4l2_device and sys.platform.startswith("linux") else cv2.CAP_ANY

    def _open(self) -> None:
        cap = cv2.VideoCapture(self._device, self._api())
        if not cap.isOpened():
            cap.release()
            raise CameraUnavailable(f"cannot open camera {self._device!r} (absent, busy, or no permission)")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._size[1])
        cap.set(cv2.CAP_PROP_FPS, self._fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued driver buffers: fresher frames
        # The first frame tells the size really delivered (drivers adjust requests); it is
        # not published, since the capture thread numbers frames from its own first one.
        ok, first = cap.read()
        if not ok:
            cap.release()
            raise CameraUnavailable(f"camera {self._device!r} opened but delivered no frame")
        height, width = first.shape[:2]
        log.info("camera %r: %dx%d via %s", self._device, width, height, cap.getBackendName())
        self._cap = cap
        self._colour = first if first.ndim == 3 else None
        self._last_frame_at = time.monotonic()
        self._start_capture(height, width, self._capture)

    def _capture(self, grey: np.ndarray, index: int) -> float | None:
        assert self._cap is not None and self._thread is not None
        ok, image = self._cap.read(self._colour)
        now = time.monotonic()
        if not ok:
            if now - self._last_frame_at > self._stall_timeout_s:
                raise CameraUnavailable(f"camera {self._device!r} stopped delivering frames")
            self._thread.stopping.wait(0.05)  # do not spin on a camera that fails instantly
            return None
        self._last_frame_at = now
        if image.ndim == 3:
            self._colour = image
        _to_grey(image, grey)
        return now

    def _release_device(self, capture_stopped: bool) -> None:
        if not capture_stopped:
            # Releasing a VideoCapture while another thread is inside read() can crash; the
            # thread is a daemon and the device is freed when the process exits.
            log.warning("camera %r capture thread is blocked; leaving the device open", self._device)
            return
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            self._colour = None


class _OnDemandFileSource(ABC):
    """What the file sources share: each ``read`` produces the next frame, so none is ever dropped,
    and ``captured_at`` is simulated time, ``index / fps``.

    ``stop()`` lets go of the files and ``start()`` opens them again, carrying on at the next frame
    (the one a failed ``read`` did not deliver); ``close()`` is final.
    """

    live = False  # frames are stamped with simulated time, index / fps

    def __init__(self, fps: float) -> None:
        self._fps = fps
        self._index = 0

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def _next_frame(self, grey: np.ndarray) -> Frame:
        """``grey`` as the next frame in order, stamped with its simulated capture time."""
        frame = Frame(grey, self._index / self._fps, self._index)
        self._index += 1
        return frame

    @property
    def frames_dropped(self) -> int:
        return 0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(_OnDemandFileSource):
    """Grey images from files, in order: a directory (its image files sorted by name) or a list.

    Finite: ``read`` raises EOFError after the last image unless ``loop``. ``captured_at`` is
    simulated time, ``index / fps``. A file that cannot be read raises FrameSourceError naming it.
    """

    name = "files"

    def __init__(self, paths: str | Path | Sequence[str | Path], *, loop: bool = False, fps: float = 30.0) -> None:
        super().__init__(fps)
        self._spec = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        self._loop = loop
        self._paths: list[Path] = []
        self._started = False
        self._closed = False

    def start(self) -> None:
        """List the images (again after a ``stop()``: a directory may have changed meanwhile)."""
        if self._closed:
            raise FrameSourceError("the file source is closed")
        if self._started:
            return
        paths: list[Path] = []
        for path in self._spec:
            try:
                if path.is_dir():
                    paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
                elif path.is_file():
                    paths.append(path)
                else:
                    raise FrameSourceError(f"image path not found: {path}")
            except OSError as exc:  # e.g. the directory vanished while it was listed, or no permission
                raise FrameSourceError(f"cannot list images in {path}: {exc.strerror or exc}") from exc
        if not paths:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise FrameSourceError(f"no image files ({suffixes}) in {', '.join(map(str, self._spec))}")
        self._paths = paths
        self._started = True

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._closed:
            raise FrameSourceError("the file source is closed")
        if not self._started:
            raise FrameSourceError("the file source is not started")  # or stopped
        if self._index >= len(self._paths) and not self._loop:
            raise EOFError(f"all {len(self._paths)} images read")
        path = self._paths[self._index % len(self._paths)]
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise FrameSourceError(f"cannot read image {path} (missing, unreadable, or not an image)")
        return self._next_frame(grey)

    def stop(self) -> None:
        self._started = False
        self._paths = []

    def close(self) -> None:
        self._closed = True
        self.stop()


class VideoFileSource(_OnDemandFileSource):
    """Grey frames of a video file, every frame in order (no drops), as fast as ``read`` is called.

    Finite: EOFError after the last frame unless ``loop``, which starts the file again (indices
    and times keep counting up). ``captured_at`` is simulated time, ``index / fps`` at the
    file's frame rate. A ``start()`` after a ``stop()`` reopens the file and seeks to the next
    frame (as precisely as the container allows: exact for intra-only codecs such as MJPG or FFV1).
    """

    name = "video"

    def __init__(self, path: str | Path, *, loop: bool = False) -> None:
        super().__init__(fps=30.0)  # the file's own rate replaces it in start()
        self._path = Path(path)
        self._loop = loop
        self._cap: cv2.VideoCapture | None = None
        self._colour: np.ndarray | None = None
        self._grey: np.ndarray | None = None
        self._closed = False

    def start(self) -> None:
        if self._closed:
            raise FrameSourceError("the video source is closed")
        if self._cap is not None:
            return
        if not self._path.is_file():
            raise FrameSourceError(f"video file not found: {self._path}")
        cap = cv2.VideoCapture(str(self._path))
        if not cap.isOpened():
            cap.release()
            raise FrameSourceError(f"cannot open video {self._path} (unknown container or codec)")
        self._fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        if self._index > 0:  # reopened after a stop(): carry on at the next frame
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.set(cv2.CAP_PROP_POS_FRAMES, self._index % count if self._loop and count > 0 else self._index)
        self._cap = cap

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._cap is None:
            raise FrameSourceError("the video source is closed" if self._closed else "the video source is not started")
        ok, image = self._cap.read(self._colour)
        if not ok and self._loop and self._index > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read(self._colour)
        if not ok:
            raise EOFError(f"end of video {self._path} after {self._index} frames")
        if image.ndim == 3:
            self._colour = image
        if self._grey is None or self._grey.shape != image.shape[:2]:
            self._grey = np.empty(image.shape[:2], np.uint8)
        _to_grey(image, self._grey)
        return self._next_frame(self._grey)

    def stop(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            self._colour = None

    def close(self) -> None:
        self._closed = True
        self.stop()
