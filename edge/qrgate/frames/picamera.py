"""The Raspberry Pi camera through Picamera2 (libcamera), reading the Y plane of the lores stream.

The ISP scales the sensor image down to a small YUV420 "lores" stream; its first ``height`` rows
are the luma (Y) plane, which is exactly the grey image a QR decoder wants, so no colour
conversion happens anywhere.

Picamera2 only exists on a Pi (apt ``python3-picamera2``), so it is imported in ``start()``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..errors import CameraUnavailable
from .live import LiveFrameSource

log = logging.getLogger(__name__)

# A capture that produces nothing for this long means the camera has stalled (ribbon cable
# unseated, sensor crashed): surface it instead of waiting forever.
STALL_TIMEOUT_S = 5.0
_POLL_S = 0.25  # how often a waiting capture looks at the stop flag


class PiCameraSource(LiveFrameSource):
    """Picamera2 lores stream (``width`` x ``height``) as grey frames, on its own capture thread.

    Latest frame wins. libcamera's only exposure cap is the frame duration (an exposure cannot
    outlast its frame), so ``max_exposure_us`` is the longest frame duration allowed and ``fps``
    sets the shortest: FrameDurationLimits = (min(1e6 / fps, max_exposure_us), max_exposure_us).
    A short cap limits motion blur from a moving hand; in dim light auto-exposure raises analogue
    gain instead of lengthening the exposure. If the cap is shorter than 1/fps the camera runs
    faster than ``fps`` (the reader keeps only the newest frame). With ``autofocus``, cameras with
    a focus motor (Camera Module 3) run continuous autofocus at fast speed, since each visitor
    holds their code at a different distance.
    """

    name = "picamera2"
    _label = "the Pi camera source"

    def __init__(
        self,
        camera_num: int = 0,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        max_exposure_us: int = 33_333,
        autofocus: bool = True,
        main_size: tuple[int, int] = (1280, 720),
        buffer_count: int = 3,
    ) -> None:
        if fps <= 0 or max_exposure_us <= 0:
            raise ValueError(f"fps and max_exposure_us must be positive, got {fps}, {max_exposure_us}")
        super().__init__()
        self._camera_num = camera_num
        self._main_size = (max(main_size[0], width), max(main_size[1], height))  # lores may not exceed main
        self._lores_size = (width, height)
        self._frame_duration_us = (min(round(1e6 / fps), max_exposure_us), max_exposure_us)
        self._autofocus = autofocus
        self._buffer_count = buffer_count
        self._camera: Any = None
        self._mapped_array: Any = None
        self._pending_job: Any = None
        self._last_frame_at = 0.0
        self._y_rows = slice(0)
        self._y_cols = slice(0)

    def _open(self) -> None:
        try:
            from picamera2 import MappedArray, Picamera2
        except ImportError as exc:
            raise CameraUnavailable(
                f"picamera2 cannot be imported ({exc}): install python3-picamera2 "
                "and use a venv created with --system-site-packages"
            ) from exc
        try:
            camera = Picamera2(self._camera_num)
        except Exception as exc:  # IndexError: no camera; RuntimeError: busy or failed to acquire
            raise CameraUnavailable(f"cannot open Pi camera {self._camera_num}: {exc!r}") from exc
        try:
            width, height = self._configure(camera)
            camera.start()
        except Exception as exc:
            _close_quietly(camera)
            raise CameraUnavailable(f"cannot start Pi camera {self._camera_num}: {exc!r}") from exc
        self._camera = camera
        self._mapped_array = MappedArray
        self._pending_job = None
        self._y_rows, self._y_cols = slice(0, height), slice(0, width)
        self._last_frame_at = time.monotonic()
        self._start_capture(height, width, self._capture)

    def _configure(self, camera: Any) -> tuple[int, int]:
        controls: dict[str, Any] = {"FrameDurationLimits": self._frame_duration_us}
        if self._autofocus and "AfMode" in camera.camera_controls:
            from libcamera import controls as libcamera_controls

            controls["AfMode"] = libcamera_controls.AfModeEnum.Continuous
            controls["AfSpeed"] = libcamera_controls.AfSpeedEnum.Fast
        config = camera.create_video_configuration(
            # main is never read, but lores may not exceed it; YUV420 keeps its buffers small.
            main={"size": self._main_size, "format": "YUV420"},
            lores={"size": self._lores_size, "format": "YUV420"},
            buffer_count=self._buffer_count,
            # queue=False: every capture_request() waits for a frame completed after the call,
            # never one already sitting in Picamera2's queue, so no stale frame is decoded.
            queue=False,
            controls=controls,
            display=None,
            encode=None,
        )
        camera.configure(config)
        width, height = camera.camera_configuration()["lores"]["size"]  # libcamera may adjust it
        log.info("Pi camera %d: lores %dx%d, controls %s", self._camera_num, width, height, controls)
        return width, height

    def _capture(self, grey: np.ndarray, index: int) -> float | None:
        if self._pending_job is None:
            self._pending_job = self._camera.capture_request(wait=False)
        try:
            request = self._pending_job.get_result(timeout=_POLL_S)
        except TimeoutError:
            if time.monotonic() - self._last_frame_at > STALL_TIMEOUT_S:
                raise CameraUnavailable(
                    f"Pi camera {self._camera_num} delivered no frame for {STALL_TIMEOUT_S:.0f} s") from None
            return None
        self._pending_job = None
        received_at = time.monotonic()
        self._last_frame_at = received_at
        try:
            # The Y plane is copied out (300 KB at 640x480) so the request goes straight back to
            # libcamera: with 3 buffers, holding one while the decoder works would stall the
            # sensor pipeline and starve auto-exposure and autofocus of frames.
            with self._mapped_array(request, "lores") as mapped:
                np.copyto(grey, mapped.array[self._y_rows, self._y_cols])
            sensor_ns = request.get_metadata().get("SensorTimestamp")
        finally:
            request.release()
        if sensor_ns is None:
            return received_at
        captured_at = sensor_ns * 1e-9
        # libcamera documents CLOCK_BOOTTIME, the Pi's V4L2 drivers stamp CLOCK_MONOTONIC; they
        # agree on a Pi that never suspends. Anything else must not poison latency figures.
        return captured_at if 0.0 <= received_at - captured_at < 1.0 else received_at

    def _release_device(self, capture_stopped: bool) -> None:
        if not capture_stopped:
            log.warning("Pi camera capture thread did not stop; closing the camera anyway")
        if self._camera is not None:
            _close_quietly(self._camera)
            self._camera = None
            self._pending_job = None  # a request of the closed camera: a reopened one starts afresh


def _close_quietly(camera: Any) -> None:
    try:
        camera.stop()
        camera.close()
    except Exception:  # closing must not raise: the camera may already be gone
        log.exception("closing the Pi camera failed")
