"""The Pi camera source off a Pi: it must fail to start with a message that says what to install."""

from __future__ import annotations

import importlib.util

import pytest

from qrgate.errors import CameraUnavailable, FrameSourceError
from qrgate.frames.picamera import PiCameraSource

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed: this tests its absence"
)


def test_start_without_picamera2_says_what_to_install():
    camera = PiCameraSource()
    with pytest.raises(CameraUnavailable) as caught:
        camera.start()
    message = str(caught.value)
    assert "python3-picamera2" in message and "--system-site-packages" in message


def test_unstarted_camera_cannot_be_read_and_closes_idempotently():
    camera = PiCameraSource()
    with pytest.raises(FrameSourceError, match="not started"):
        camera.read(timeout=0)
    assert camera.frames_dropped == 0
    camera.close()
    camera.close()


def test_nonsense_timing_is_rejected():
    with pytest.raises(ValueError):
        PiCameraSource(fps=0)
