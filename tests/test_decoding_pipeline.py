"""The per-frame pipeline: the presence gate skips a static empty scene but never the first frame
showing a code; the tracked region is decoded first and gets the repair ladder when the frame fails."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import segno

from qrgate.config import DecoderConfig
from qrgate.decoding.base import DecodedCode
from qrgate.decoding.cascade import CascadeDecoder
from qrgate.decoding.factory import build_decoder, build_pipeline
from qrgate.decoding.pipeline import FramePipeline
from qrgate.decoding.presence import PresenceGate
from qrgate.decoding.tracking import RegionTracker, texture
from qrgate.decoding.zxing import ZxingDecoder
from qrgate.frames.synthetic import SyntheticGate, Visit


def code_image(text: str, scale: int = 4) -> np.ndarray:
    buf = io.BytesIO()
    segno.make_qr(text).save(buf, kind="png", scale=scale, border=4)
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def wall(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(60, 200, (480, 640), dtype=np.uint8), (0, 0), 6)


def noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    return np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


class Counting:
    def __init__(self, inner) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        self.calls += 1
        return self.inner.decode(grey)


# -- presence gate ------------------------------------------------------------------------------


def test_a_static_noisy_scene_is_decoded_only_every_nth_frame():
    gate = PresenceGate(decode_every=10)
    rng = np.random.default_rng(1)
    scene = wall()
    decided = [gate.wants(noisy(scene, rng)) for _ in range(100)]
    assert decided[0]  # the first frame: no background yet
    assert sum(decided) == 1 + 99 // 10
    assert gate.skipped == 100 - sum(decided)


def test_any_change_in_the_scene_is_decoded_and_then_learnt():
    gate = PresenceGate(decode_every=1000)
    rng = np.random.default_rng(2)
    scene = wall()
    for _ in range(5):
        gate.wants(noisy(scene, rng))
    bag = scene.copy()
    bag[300:340, 500:560] = 30  # something new, 40x60 px, no code
    decided = [gate.wants(noisy(bag, rng)) for _ in range(60)]
    assert decided[:5] == [True] * 5
    assert not any(decided[-40:])  # absorbed into the background within a third of a second
    lights = np.clip(bag.astype(int) + 25, 0, 255).astype(np.uint8)
    assert gate.wants(noisy(lights, rng))


def test_while_something_qr_like_is_in_view_every_frame_is_decoded():
    gate = PresenceGate(decode_every=1000)
    scene = wall()
    gate.wants(scene)
    gate.active = True
    assert all(gate.wants(scene) for _ in range(50))
    gate.active = False
    assert not gate.wants(scene)


def test_presence_gate_follows_a_change_of_frame_size_and_strided_frames():
    gate = PresenceGate()
    gate.wants(np.full((480, 640), 100, np.uint8))
    assert not gate.wants(np.full((480, 640), 100, np.uint8))
    assert gate.wants(np.full((720, 1280), 100, np.uint8))
    padded = np.full((720, 1344), 100, np.uint8)
    assert not gate.wants(padded[:, :1280])


@pytest.mark.parametrize("bad", [dict(threshold=0), dict(min_changed=0), dict(decode_every=0), dict(learn_rate=0)])
def test_presence_gate_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        PresenceGate(**bad)


def test_on_the_synthetic_stream_the_first_frame_showing_each_code_is_never_skipped():
    script = [Visit(f"QRG1:presence-{k}:" + "p" * 120, dwell_s=0.8, gap_s=1.5, category=category)
              for k, category in enumerate(("clean", "paper", "glare", "motion", "lighting", "clean"))]
    scene = SyntheticGate(script, seed=8)
    zxing = ZxingDecoder()
    pipeline = build_pipeline()
    frame = np.empty((scene.height, scene.width), np.uint8)
    first_zxing: dict[int, int] = {}
    first_pipeline: dict[int, int] = {}
    empty = skipped_empty = 0
    for index in range(scene.frame_count):
        scene.render(index, frame)
        visit = scene.truth(index)
        decoded_before = pipeline.stats.decoded
        codes = pipeline.decode(frame)
        if visit is None:
            empty += 1
            skipped_empty += pipeline.stats.decoded == decoded_before
            assert codes == []
            continue
        payload = script[visit].payload
        if visit not in first_zxing and any(c.text == payload for c in zxing.decode(frame)):
            first_zxing[visit] = index
        if visit not in first_pipeline and any(c.text == payload for c in codes):
            first_pipeline[visit] = index
    assert set(first_zxing) == set(range(len(script)))
    assert all(first_pipeline[v] <= first_zxing[v] for v in first_zxing), (first_pipeline, first_zxing)
    assert skipped_empty > empty / 2  # the gaps are mostly static: most empty frames were skipped


# -- tracking -----------------------------------------------------------------------------------


def test_after_a_read_the_region_is_decoded_first_and_the_full_frame_regularly():
    frame = wall()
    symbol = code_image("QRG1:tracked", 4)
    frame[100 : 100 + symbol.shape[0], 150 : 150 + symbol.shape[1]] = symbol
    full = Counting(build_decoder())
    region = Counting(ZxingDecoder())
    pipeline = FramePipeline(full, region_decoder=region, tracker=RegionTracker(), full_frame_every=4)
    results = [pipeline.decode(frame) for _ in range(12)]
    assert all([c.text for c in codes] == ["QRG1:tracked"] for codes in results)
    assert results[1] == results[0]  # the same corners, in frame pixels, from the region
    assert full.calls == 3 and region.calls == 9  # frames 0, 4, 8 whole; the rest the region only
    assert pipeline.stats.region_first == 9

    # A second visitor's code elsewhere is found at the next full frame.
    second = code_image("QRG1:second", 4)
    frame[300 : 300 + second.shape[0], 450 : 450 + second.shape[1]] = second
    seen = [sorted(c.text for c in pipeline.decode(frame)) for _ in range(4)]
    assert ["QRG1:second", "QRG1:tracked"] in seen


def test_a_code_zxing_cannot_locate_is_read_on_its_texture_or_in_the_tracked_region():
    # Frame 1: a sharp code, read. Frame 2: the same code softened and striped by strong moiré so
    # zxing locates nothing; the ladder reads it where the texture map finds it, or, without the
    # texture look, in the tracked region.
    frame = wall(3)
    symbol = code_image("QRG1:" + "m" * 60, 3)
    frame[120 : 120 + symbol.shape[0], 200 : 200 + symbol.shape[1]] = symbol
    ys, xs = np.mgrid[0:480, 0:640]
    hard = cv2.GaussianBlur(frame, (0, 0), 0.8).astype(np.float32) * (1 + 0.4 * np.sin(xs * 0.5 + ys * 0.2))
    hard = np.clip(hard, 0, 255).astype(np.uint8)
    scan = ZxingDecoder().scan(hard)
    assert scan.codes == [] and scan.regions == ()
    untracked = build_pipeline(DecoderConfig(presence_gate=False, track=False))
    assert [c.text for c in untracked.decode(hard)] == ["QRG1:" + "m" * 60]
    assert isinstance(untracked.decoder, CascadeDecoder) and untracked.decoder.stats.texture_reads == 1
    tracked = build_pipeline(DecoderConfig(presence_gate=False))
    assert isinstance(tracked.decoder, CascadeDecoder)
    tracked.decoder._small_look = None  # no texture look: only the tracked region can help
    assert tracked.decode(frame) and tracked.decode(hard)
    assert tracked.stats.region_repaired == 1
    # With neither, nothing reads it.
    blind = build_pipeline(DecoderConfig(presence_gate=False, track=False))
    assert isinstance(blind.decoder, CascadeDecoder)
    blind.decoder._small_look = None
    assert blind.decode(hard) == []


def test_the_sweep_runs_on_every_nth_frame_where_nothing_was_found_and_maps_corners_back():
    empty = wall(7)
    zbar = Counting(build_decoder(DecoderConfig(backend="zbar", fallback="none")))
    pipeline = FramePipeline(build_decoder(), sweep=zbar, sweep_every=3)
    for _ in range(7):
        assert pipeline.decode(empty) == []
    assert zbar.calls == 3  # frames 1, 4, 7: the first is swept, then every third
    assert pipeline.stats.swept == 3 and pipeline.stats.sweep_reads == 0

    wide = np.full((1080, 1920), 170, np.uint8)  # wider than SWEEP_MAX_WIDTH: swept shrunk to 960
    symbol = code_image("QRG1:swept", 8)
    wide[400 : 400 + symbol.shape[0], 1000 : 1000 + symbol.shape[1]] = symbol
    class Blind:  # a primary that reads nothing, so only the sweep can
        name = "blind"

        def decode(self, grey: np.ndarray) -> list[DecodedCode]:
            return []

    only_sweep = FramePipeline(Blind(), sweep=zbar, sweep_every=1)
    codes = only_sweep.decode(wide)
    assert [c.text for c in codes] == ["QRG1:swept"] and codes[0].backend == "sweep+zbar"
    xs = [x for x, _ in codes[0].corners]
    ys = [y for _, y in codes[0].corners]
    side = symbol.shape[0]
    assert min(xs) >= 1000 and max(xs) <= 1000 + side and min(ys) >= 400 and max(ys) <= 400 + side


def test_once_the_code_is_gone_the_region_gets_no_repairs_and_the_hint_expires():
    frame = wall(4)
    symbol = code_image("QRG1:leaving", 4)
    shown = frame.copy()
    shown[100 : 100 + symbol.shape[0], 150 : 150 + symbol.shape[1]] = symbol
    pipeline = build_pipeline(DecoderConfig(presence_gate=False))
    assert pipeline.decode(shown)
    cascade = pipeline.decoder
    assert texture(frame[80:300, 130:330]) < 0.5 * texture(shown[80:300, 130:330])
    for _ in range(20):
        assert pipeline.decode(frame) == []
    assert cascade.stats.regions == 0  # the texture test kept the ladder from running
    assert pipeline.tracker.hint() is None  # and the hint expired


def test_region_tracker_hint_lifetime():
    tracker = RegionTracker(hold_frames=3)
    assert tracker.hint() is None
    grey = wall()
    tracker.saw(grey, [((100, 100), (200, 100), (200, 200), (100, 200))], read=True)
    hints = [tracker.hint() for _ in range(4)]
    assert [h is not None for h in hints] == [True, True, True, False]
    assert hints[0].read and hints[0].box[0] < 100 < 200 < hints[0].box[2]
    tracker.saw(grey, [((5000, 5000), (5001, 5000), (5001, 5001), (5000, 5001))], read=False)  # off-frame
    assert tracker.hint() is None
    with pytest.raises(ValueError):
        RegionTracker(hold_frames=0)


def test_the_tracked_region_moves_on_with_the_code():
    tracker = RegionTracker(hold_frames=5, margin=0.0)
    grey = wall()
    at = lambda x: [((x, 100), (x + 100, 100), (x + 100, 200), (x, 200))]  # noqa: E731
    assert tracker.hint() is None
    tracker.saw(grey, at(100), read=True)
    assert tracker.hint().box[0] == 100 - 8  # one read: no velocity yet (region_box pads 8 px)
    tracker.saw(grey, at(112), read=True)  # 12 px one frame later
    boxes = [tracker.hint().box for _ in range(3)]
    assert [b[0] + 8 for b in boxes] == [124, 136, 148]  # where the code will be, frame by frame
    assert all(b[2] - b[0] == 117 for b in boxes)  # same size: 100 px and 8 px padding each side, end-exclusive
    tracker.saw(grey, at(500), read=True)
    tracker.hint()
    tracker.saw(grey, at(512), read=True)  # heading out of the frame at 12 px per frame
    assert [tracker.hint().box[2] for _ in range(3)] == [633, 640, 640]  # the box stops at the edge
    tracker.saw(grey, at(100), read=True)  # 400 px in 3 frames: another code, not a velocity
    assert [tracker.hint().box[0] + 8 for _ in range(2)] == [100, 100]


def test_a_finder_pattern_inside_a_code_read_a_moment_ago_keeps_the_code_region():
    tracker = RegionTracker(margin=0.0)
    grey = wall()
    tracker.saw(grey, [((100, 100), (300, 100), (300, 300), (100, 300))], read=True)
    read_box = tracker.hint().box
    finder = [((110, 250), (150, 250), (150, 290), (110, 290))]  # one corner of the same code
    tracker.saw(grey, finder, read=False)
    kept = tracker.hint()
    assert kept.read and kept.box == read_box
    elsewhere = [((450, 300), (520, 300), (520, 370), (450, 370))]  # not part of it: a new sighting
    tracker.saw(grey, elsewhere, read=False)
    moved = tracker.hint()
    assert not moved.read and moved.box[0] > 400


def test_a_partial_sighting_keeps_the_moving_region_where_the_code_has_got_to():
    tracker = RegionTracker(margin=0.0)
    grey = wall()
    at = lambda x: [((x, 100), (x + 100, 100), (x + 100, 200), (x, 200))]  # noqa: E731
    tracker.hint()
    tracker.saw(grey, at(100), read=True)
    tracker.hint()
    tracker.saw(grey, at(112), read=True)  # 12 px per frame
    assert [tracker.hint().box[0] + 8 for _ in range(2)] == [124, 136]
    finder = [((140, 150), (170, 150), (170, 180), (140, 180))]  # one finder pattern of it, where it is now
    tracker.saw(grey, finder, read=False)
    kept = tracker.hint()
    assert kept.read and kept.box[0] + 8 == 148  # on from 136, not back at the last read's 112


def test_pipeline_reads_at_least_what_the_cascade_reads_on_a_hard_stream():
    # Categories where zxing loses the code on some frames it has just read (blur, a moving hand,
    # damage): the tracked region and its ladder read some of them.
    script = [Visit(f"QRG1:stream-{k}:" + "s" * 500, category=category, dwell_s=1.0, gap_s=0.3)
              for k, category in enumerate(("motion", "blur", "damage"))]
    scene = SyntheticGate(script, seed=13)
    cascade, pipeline = build_decoder(), build_pipeline()
    frame = np.empty((scene.height, scene.width), np.uint8)
    by_cascade = by_pipeline = 0
    for index in range(scene.frame_count):
        scene.render(index, frame)
        visit = scene.truth(index)
        payload = script[visit].payload if visit is not None else None
        piped = pipeline.decode(frame)
        assert all(c.text == payload for c in piped)
        by_pipeline += bool(piped)
        by_cascade += any(c.text == payload for c in cascade.decode(frame))
    assert by_pipeline > by_cascade


# -- a code that fills (and overflows) the frame: a phone pushed up to the camera ---------------


def test_a_code_overflowing_the_frame_is_tracked_inside_it_and_held_still_is_decoded_every_frame():
    text = "QG1:close-up-" + "c" * 40
    symbol = code_image(text, scale=15)  # 555 px with its quiet zone: more than the 480 rows
    frame = np.full((480, 640), 200, np.uint8)
    top = (symbol.shape[0] - 480) // 2
    left = max(0, (640 - symbol.shape[1]) // 2)
    visible = symbol[top:top + 480, : 640 - left]
    frame[:, left:left + visible.shape[1]] = visible  # the quiet zone cut off at the top and bottom
    rng = np.random.default_rng(5)
    pipeline = build_pipeline()
    assert pipeline.tracker is not None and pipeline.presence is not None
    frames = [noisy(frame, rng) for _ in range(12)]
    reads = [pipeline.decode(f) for f in frames]
    assert all([c.text for c in codes] == [text] for codes in reads)
    hint = pipeline.tracker.hint()
    assert hint is not None and hint.read
    x0, y0, x1, y1 = hint.box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480  # clipped to the frame, not lost
    assert (x1 - x0) * (y1 - y0) >= 0.5 * 640 * 480
    # Held motionless it would melt into the presence gate's background; the last frame showing a
    # code keeps the gate decoding every frame, so none of the 12 was skipped.
    assert pipeline.presence.skipped == 0
    assert pipeline.stats.decoded == 12
    assert pipeline.stats.region_first >= 8  # read in the tracked region, which is most of the frame
