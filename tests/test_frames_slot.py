"""LatestFrameSlot and CaptureThread: the hand-off every live source (Pi camera, USB, realtime scene) uses."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from qrgate.errors import CameraUnavailable, FrameSourceError
from qrgate.frames.capture_thread import CaptureThread
from qrgate.frames.slot import LatestFrameSlot


def publish(slot: LatestFrameSlot, value: int, index: int) -> np.ndarray:
    grey = slot.acquire()
    grey.fill(value)
    slot.publish(grey, captured_at=index / 30, index=index)
    return grey


def test_newest_frame_wins_and_overwritten_frames_count_as_dropped():
    slot = LatestFrameSlot(4, 6)
    for index in range(5):
        publish(slot, value=index, index=index)
    frame = slot.take(timeout=0)
    assert frame.index == 4 and frame.grey.shape == (4, 6) and (frame.grey == 4).all()
    assert frame.captured_at == pytest.approx(4 / 30)
    assert slot.dropped == 4
    publish(slot, value=9, index=5)
    assert slot.take(timeout=0).index == 5
    assert slot.dropped == 4  # a frame that was read is not a drop


def test_take_waits_up_to_the_timeout_then_returns_none():
    slot = LatestFrameSlot(2, 2)
    assert slot.take(timeout=0.05) is None


def test_take_wakes_as_soon_as_a_frame_is_published():
    slot = LatestFrameSlot(2, 2)
    threading.Timer(0.05, publish, (slot, 7, 0)).start()
    frame = slot.take(timeout=10)
    assert frame is not None and frame.index == 0


def test_the_producer_never_gets_the_buffer_the_reader_holds_or_the_one_waiting():
    slot = LatestFrameSlot(2, 2)
    held = None
    for index in range(50):
        waiting = publish(slot, value=index % 256, index=index)
        if index % 3 == 0:
            frame = slot.take(timeout=0)
            held, waiting = frame.grey, None
        fresh = slot.acquire()
        assert fresh is not held and fresh is not waiting
    # the reader's frame stays intact while the producer keeps writing
    frame = slot.take(timeout=0)
    snapshot = frame.grey.copy()
    for index in range(50, 60):
        publish(slot, value=255, index=index)
    assert (frame.grey == snapshot).all()


def test_a_failure_is_raised_by_the_next_take_and_every_one_after():
    slot = LatestFrameSlot(2, 2)
    publish(slot, 1, 0)
    slot.fail(CameraUnavailable("ribbon cable unplugged"))
    for _ in range(2):
        with pytest.raises(CameraUnavailable, match="ribbon cable"):
            slot.take(timeout=1)


def test_a_failure_wakes_a_waiting_reader():
    slot = LatestFrameSlot(2, 2)
    threading.Timer(0.05, slot.fail, (CameraUnavailable("gone"),)).start()
    with pytest.raises(CameraUnavailable):
        slot.take(timeout=10)


def test_finish_delivers_the_last_frame_then_eof():
    slot = LatestFrameSlot(2, 2)
    publish(slot, 1, 0)
    slot.finish()
    assert slot.take(timeout=0).index == 0
    with pytest.raises(EOFError):
        slot.take(timeout=1)


def test_close_wakes_a_waiting_reader_with_an_error():
    slot = LatestFrameSlot(2, 2)
    threading.Timer(0.05, slot.close).start()
    with pytest.raises(FrameSourceError, match="closed"):
        slot.take(timeout=10)


# -- CaptureThread --------------------------------------------------------------------------------


def run_thread(capture) -> tuple[LatestFrameSlot, CaptureThread]:
    slot = LatestFrameSlot(2, 3)
    thread = CaptureThread("test", slot, capture)
    thread.start()
    return slot, thread


def test_capture_thread_publishes_numbered_frames_and_ends_with_eof():
    def capture(grey, index):
        if index == 3:
            raise EOFError
        grey.fill(index)
        return 100.0 + index

    slot, thread = run_thread(capture)
    seen = []
    with pytest.raises(EOFError):
        while True:
            frame = slot.take(timeout=5)
            assert frame is not None
            seen.append((frame.index, frame.captured_at, int(frame.grey[0, 0])))
    assert thread.stop()
    # every frame was either read or dropped; the last one is always read
    assert seen[-1] == (2, 102.0, 2)
    assert len(seen) + slot.dropped == 3


def test_capture_thread_retries_when_no_frame_came():
    calls = []

    def capture(grey, index):
        calls.append(index)
        if len(calls) < 3:
            return None  # a timeout in the camera: try again with the same index
        if index > 0:
            raise EOFError
        return 1.0

    slot, thread = run_thread(capture)
    assert slot.take(timeout=5).index == 0
    assert calls[:3] == [0, 0, 0]
    thread.stop()


def test_a_source_error_on_the_thread_reaches_the_reader():
    def capture(grey, index):
        raise CameraUnavailable("camera 0 delivered no frame for 5 s")

    slot, thread = run_thread(capture)
    with pytest.raises(CameraUnavailable, match="no frame for 5 s"):
        slot.take(timeout=5)
    thread.stop()


def test_an_unexpected_library_error_becomes_camera_unavailable():
    def capture(grey, index):
        raise RuntimeError("libcamera: dequeue timed out")

    slot, thread = run_thread(capture)
    with pytest.raises(CameraUnavailable, match="dequeue timed out"):
        slot.take(timeout=5)
    thread.stop()


def test_stop_ends_a_capture_that_waits_on_the_stop_flag():
    started = threading.Event()
    holder: dict[str, CaptureThread] = {}

    def capture(grey, index):
        started.set()
        holder["thread"].stopping.wait(30)
        return None

    slot = LatestFrameSlot(2, 2)
    holder["thread"] = thread = CaptureThread("test", slot, capture)
    thread.start()
    assert started.wait(5)
    assert thread.stop(timeout=5)
