"""Decoding on several threads: every frame decoded when asked to wait, latest frame wins (drops
counted) when not, results delivered one at a time from private copies, worker failures surfaced."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from qrgate.config import DecoderConfig
from qrgate.decoding.factory import build_pipeline
from qrgate.decoding.parallel import ParallelDecoder
from qrgate.frames.base import Frame
from qrgate.frames.synthetic import SyntheticGate, Visit

SCRIPT = [Visit(f"QRG1:parallel-{k}:" + "q" * 90, dwell_s=0.6, gap_s=0.3, category=category)
          for k, category in enumerate(("clean", "blur", "paper"))]


def stream() -> list[np.ndarray]:
    scene = SyntheticGate(SCRIPT, seed=6)
    frames = []
    for index in range(scene.frame_count):
        grey = np.empty((scene.height, scene.width), np.uint8)
        scene.render(index, grey)
        frames.append(grey)
    return frames


def test_with_wait_every_frame_is_decoded_exactly_as_on_one_thread():
    frames = stream()
    single = build_pipeline(DecoderConfig(presence_gate=False, track=False))
    expected = {index: [c.text for c in single.decode(grey)] for index, grey in enumerate(frames)}
    got: dict[int, list[str]] = {}
    buffer = np.empty_like(frames[0])  # the "camera" reuses one buffer, as real sources do
    with ParallelDecoder(build_pipeline(DecoderConfig(presence_gate=False, track=False)), lambda f, c: got.__setitem__(
            f.index, [code.text for code in c]), workers=3) as pool:
        for index, grey in enumerate(frames):
            np.copyto(buffer, grey)
            pool.submit(Frame(buffer, index / 30, index), wait=True)
        assert pool.wait_idle(timeout=30)
        assert (pool.frames_submitted, pool.frames_decoded, pool.frames_dropped) == (len(frames), len(frames), 0)
    assert got == expected
    assert sum(bool(texts) for texts in expected.values()) > 20


def test_a_slow_consumer_gets_the_latest_frame_and_drops_are_counted():
    frames = stream()[:40]
    release = threading.Event()
    delivered: list[int] = []

    def slow(frame: Frame, codes: list) -> None:
        release.wait(10)
        delivered.append(frame.index)

    pool = ParallelDecoder(build_pipeline(DecoderConfig(presence_gate=False)), slow, workers=2)
    try:
        for index, grey in enumerate(frames):
            pool.submit(Frame(grey, index / 30, index))  # both workers are stuck in slow() from frame 1 on
        release.set()
        assert pool.wait_idle(timeout=30)
    finally:
        pool.close()
    # Two workers held frames 0 and 1; every later frame replaced the pending one; the last won.
    assert sorted(delivered) == [0, 1, len(frames) - 1]
    assert pool.frames_dropped == len(frames) - 3
    assert pool.frames_submitted == pool.frames_decoded + pool.frames_dropped + pool.frames_skipped


def test_results_are_delivered_one_at_a_time_from_each_frames_own_copy():
    frames = stream()
    inside = 0
    overlaps = 0
    mismatched = 0
    lock = threading.Lock()

    def check(frame: Frame, codes: list) -> None:
        nonlocal inside, overlaps, mismatched
        with lock:
            inside += 1
            overlaps += inside > 1
        time.sleep(0.001)
        mismatched += not np.array_equal(frame.grey, frames[frame.index])
        with lock:
            inside -= 1

    buffer = np.empty_like(frames[0])
    with ParallelDecoder(build_pipeline(), check, workers=3) as pool:
        for index, grey in enumerate(frames):
            np.copyto(buffer, grey)
            pool.submit(Frame(buffer, index / 30, index), wait=True)
            buffer[:] = 0  # the camera overwrites its buffer at once
        pool.wait_idle(timeout=30)
        skipped = pool.frames_skipped
    assert overlaps == 0 and mismatched == 0
    assert skipped > 0  # the presence gate ran on the submitting thread


def test_a_failing_consumer_stops_the_pool_and_the_next_submit_raises_it():
    frames = stream()[:5]

    def broken(frame: Frame, codes: list) -> None:
        raise KeyError("gate bug")

    pool = ParallelDecoder(build_pipeline(DecoderConfig(presence_gate=False)), broken, workers=2)
    pool.submit(Frame(frames[0], 0.0, 0))
    deadline = time.monotonic() + 10
    with pytest.raises(KeyError, match="gate bug"):
        while time.monotonic() < deadline:
            pool.submit(Frame(frames[1], 0.0, 1))
            time.sleep(0.01)
    pool.close()


def test_frames_of_a_new_size_and_misuse():
    got = []
    with ParallelDecoder(build_pipeline(DecoderConfig(presence_gate=False)), lambda f, c: got.append(f.grey.shape),
                         workers=1) as pool:
        pool.submit(Frame(np.full((120, 160), 90, np.uint8), 0.0, 0), wait=True)
        pool.submit(Frame(np.full((480, 640), 90, np.uint8), 0.0, 1), wait=True)
        pool.wait_idle(timeout=10)
    assert got == [(120, 160), (480, 640)]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(Frame(np.zeros((120, 160), np.uint8), 0.0, 2))
    with pytest.raises(ValueError):
        ParallelDecoder(build_pipeline(), lambda f, c: None, workers=0)
