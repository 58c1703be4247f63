"""The synthetic gate scene: timeline and ground truth, determinism, readability, pacing and drops."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qrgate.decoding.zxing import ZxingDecoder
from qrgate.errors import FrameSourceError
from qrgate.frames.synthetic import SyntheticGate, Visit

EASY = [
    Visit(f"QRG1:visitor-{k:03d}-" + "p" * 80, dwell_s=1.2, gap_s=0.5, medium=("phone", "paper")[k % 2],
          module_px=3.5, max_tilt_deg=10, blur_share=0.05)
    for k in range(4)
]


def all_frames(source) -> list:
    frames = []
    with source:
        while True:
            try:
                frame = source.read()
            except EOFError:
                return frames
            frames.append((frame.index, frame.captured_at, frame.grey.copy()))


def test_timeline_and_truth_follow_the_script():
    script = [
        Visit("first", dwell_s=1.0, gap_s=0.5),
        Visit("second", dwell_s=0.5, gap_s=0.0),
        Visit("third", dwell_s=0.2, gap_s=1.0),
    ]
    scene = SyntheticGate(script, fps=20.0)
    truth = [scene.truth(i) for i in range(scene.frame_count)]
    assert truth == [None] * 10 + [0] * 20 + [1] * 10 + [None] * 20 + [2] * 4
    assert scene.frame_count == 64
    with pytest.raises(IndexError):
        scene.truth(64)


def test_looping_scene_repeats_its_truth():
    scene = SyntheticGate([Visit("a", dwell_s=0.5, gap_s=0.5)], fps=10.0, loop=True)
    assert [scene.truth(i) for i in range(20)] == ([None] * 5 + [0] * 5) * 2


def test_frames_are_deterministic_given_the_seed():
    a = all_frames(SyntheticGate(EASY[:2], seed=42))
    b = all_frames(SyntheticGate(EASY[:2], seed=42))
    c = all_frames(SyntheticGate(EASY[:2], seed=43))
    assert len(a) == len(b) == len(c)
    assert all(fa[0] == fb[0] and fa[1] == fb[1] and np.array_equal(fa[2], fb[2]) for fa, fb in zip(a, b, strict=True))
    assert any(not np.array_equal(fa[2], fc[2]) for fa, fc in zip(a, c, strict=True))


def test_render_is_a_pure_function_of_the_index():
    scene = SyntheticGate(EASY[:2], seed=9)
    forward = [np.empty((480, 640), np.uint8) for _ in range(3)]
    picks = [40, 5, 90]
    for index, out in zip(picks, forward, strict=True):
        scene.render(index, out)
    again = np.empty((480, 640), np.uint8)
    for index, out in zip(reversed(picks), reversed(forward), strict=True):
        scene.render(index, again)
        assert np.array_equal(again, out)


def test_non_realtime_frames_carry_simulated_time_and_never_drop():
    scene = SyntheticGate(EASY[:1], fps=25.0, time_origin=1000.0)
    frames = all_frames(scene)
    assert [f[0] for f in frames] == list(range(scene.frame_count))
    assert [f[1] for f in frames] == [1000.0 + i / 25.0 for i in range(scene.frame_count)]
    assert scene.frames_dropped == 0


def test_frames_look_like_a_camera_image():
    scene = SyntheticGate(EASY[:1], width=320, height=240, seed=1)
    frames = all_frames(scene)
    grey = frames[-10][2]
    assert grey.shape == (240, 320) and grey.dtype == np.uint8
    empty_a, empty_b = frames[0][2], frames[1][2]
    assert not np.array_equal(empty_a, empty_b)  # sensor noise differs frame to frame
    assert np.abs(empty_a.astype(int) - empty_b.astype(int)).mean() < 8  # but the scene does not


def test_zxing_reads_most_frames_showing_a_code_and_nothing_in_empty_ones():
    scene = SyntheticGate(EASY, seed=0)
    decoder = ZxingDecoder()
    shown = read = false = 0
    with scene:
        while True:
            try:
                frame = scene.read()
            except EOFError:
                break
            visit = scene.truth(frame.index)
            texts = [c.text for c in decoder.decode(frame.grey)]
            if visit is None:
                false += len(texts)
                continue
            shown += 1
            read += EASY[visit].payload in texts
            false += sum(t != EASY[visit].payload for t in texts)
    # Measured 72-74% over seeds 0-5: the code is unreadable while it slides in and out of view
    # (about a third of a 1.2 s dwell), readable nearly always once the hand settles.
    assert read >= 0.65 * shown
    assert false == 0
    assert shown == 4 * 36


def test_every_visit_of_a_realistic_script_gets_read():
    script = [Visit(f"QRG1:{k}:" + "r" * 200, medium=("phone", "paper")[k % 2]) for k in range(6)]
    scene = SyntheticGate(script, seed=5)
    decoder = ZxingDecoder()
    frame = np.empty((scene.height, scene.width), np.uint8)
    visits_read = set()
    for index in range(scene.frame_count):
        scene.render(index, frame)
        visit = scene.truth(index)
        if visit is not None and any(c.text == script[visit].payload for c in decoder.decode(frame)):
            visits_read.add(visit)
    assert visits_read == set(range(6))


def test_read_raises_eof_at_the_end_and_errors_when_misused():
    scene = SyntheticGate([Visit("x", dwell_s=0.1, gap_s=0.0)], fps=30.0)
    with pytest.raises(FrameSourceError, match="not started"):
        scene.read()
    with scene:
        assert [scene.read().index for _ in range(3)] == [0, 1, 2]
        with pytest.raises(EOFError):
            scene.read()
    scene.close()  # idempotent
    with pytest.raises(FrameSourceError, match="closed"):
        scene.read()


def test_realtime_counts_the_frames_a_slow_reader_misses():
    script = [Visit("slow reader", dwell_s=0.3, gap_s=0.2)]
    scene = SyntheticGate(script, width=320, height=240, fps=100.0, realtime=True, seed=4)
    got = []
    with scene:
        while True:
            try:
                frame = scene.read(timeout=5)
            except EOFError:
                break
            assert frame is not None
            got.append((frame.index, frame.captured_at, scene.truth(frame.index)))
            time.sleep(0.03)  # three frame periods
        dropped = scene.frames_dropped
    indices = [g[0] for g in got]
    assert indices == sorted(set(indices)) and indices[-1] == scene.frame_count - 1
    assert dropped > 0 and len(got) + dropped == scene.frame_count
    first_index, first_at, _ = got[0]
    assert all(at - first_at == pytest.approx((index - first_index) / 100.0) for index, at, _ in got)


def test_realtime_loop_keeps_going_until_closed():
    script = [Visit("loop", dwell_s=0.05, gap_s=0.05)]
    scene = SyntheticGate(script, width=320, height=240, fps=200.0, realtime=True, loop=True)
    with scene:
        deadline = time.monotonic() + 10
        frame = scene.read(timeout=5)
        while frame.index < 2 * scene.frame_count and time.monotonic() < deadline:
            frame = scene.read(timeout=5)
    assert frame.index >= 2 * scene.frame_count


@pytest.mark.parametrize("bad", [
    dict(dwell_s=0), dict(gap_s=-1), dict(medium="tablet"),
    dict(module_px=0.5), dict(max_tilt_deg=80), dict(blur_share=2),
])
def test_visit_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        Visit("x", **bad)


def test_scene_rejects_an_empty_script_and_a_payload_no_qr_holds():
    with pytest.raises(ValueError):
        SyntheticGate([])
    with pytest.raises(ValueError, match="too large"):  # segno's DataOverflowError, at construction
        SyntheticGate([Visit("x" * 8000)])


def test_load_script_reads_payloads_and_visit_objects(tmp_path):
    from qrgate.frames.synthetic import load_script

    path = tmp_path / "script.json"
    path.write_text('["QRG1:plain", {"payload": "HC1:x", "medium": "paper", "dwell_s": 2.0, "gap_s": 0.5}]')
    assert load_script(path) == [Visit("QRG1:plain"), Visit("HC1:x", medium="paper", dwell_s=2.0, gap_s=0.5)]


@pytest.mark.parametrize("content, problem", [
    ("not json", "script.json"),
    ("[]", "non-empty"),
    ('[{"payload": "x", "colour": "red"}]', "visit 0"),
    ('["ok", {"payload": "x", "medium": "tablet"}]', "visit 1"),
    ("[42]", "visit 0"),
])
def test_load_script_names_the_problem(tmp_path, content, problem):
    from qrgate.errors import ConfigError
    from qrgate.frames.synthetic import load_script

    path = tmp_path / "script.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        load_script(path)
