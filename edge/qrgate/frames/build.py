"""The frame source a ``[camera]`` section names: each backend imported lazily, since picamera2 only exists on a Pi
and OpenCV's camera code is not needed for the synthetic scene."""

from __future__ import annotations

from ..config import CameraConfig
from .base import FrameSource

SYNTHETIC_TEST_CARD = "qrgate synthetic test card"


def build_frame_source(camera: CameraConfig) -> FrameSource:
    """The configured camera. Imports each backend lazily: picamera2 only exists on a Pi."""
    if camera.source == "picamera2":
        from .picamera import PiCameraSource

        return PiCameraSource(
            width=camera.width, height=camera.height, fps=camera.fps,
            max_exposure_us=camera.max_exposure_us, autofocus=camera.autofocus,
        )
    if camera.source == "usb":
        from .opencv import UsbCamera

        return UsbCamera(camera.usb_device, width=camera.width, height=camera.height, fps=camera.fps)
    if camera.source == "files":
        from .opencv import FileSource

        assert camera.path is not None  # CameraConfig refuses this source without a path
        return FileSource(camera.path, loop=camera.loop)
    if camera.source == "video":
        from .opencv import VideoFileSource

        assert camera.path is not None  # as for files
        return VideoFileSource(camera.path, loop=camera.loop)
    from .synthetic import SyntheticGate, Visit, load_script

    if camera.path:
        script, loop = load_script(camera.path), camera.loop
    else:
        # No visitor script: a looping test card, so a bench-top gate shows the loop is alive (red, not_a_pass).
        script, loop = [Visit(SYNTHETIC_TEST_CARD)], True
    return SyntheticGate(
        script, width=camera.width, height=camera.height, fps=camera.fps,
        realtime=True, seed=camera.seed, loop=loop,
    )
