"""The decoder cascade: no extra work on frames zxing read or saw nothing in; the repair ladder on a
located-but-unreadable QR's region, in order, bounded, corners mapped back to the frame."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import segno

from qrgate.decoding import repair
from qrgate.decoding.base import DecodedCode
from qrgate.decoding.cascade import Attempt, CascadeDecoder, default_attempts, wide_attempts
from qrgate.decoding.factory import build_decoder
from qrgate.decoding.geometry import located_boxes, region_box
from qrgate.decoding.opencv import OpenCvDecoder
from qrgate.decoding.zbar import ZbarDecoder
from qrgate.decoding.zxing import ZxingDecoder
from qrgate.frames.synthetic import SyntheticGate, Visit
from qrgate_tools.bench_sizes import category_payloads, category_script

TEXT = "QRG1:" + "repair-ladder-" * 12


class Counting:
    """A real decoder that records the shape of every image it is asked about."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.shapes: list[tuple[int, int]] = []

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        self.shapes.append(grey.shape)
        return self.inner.decode(grey)


def blurred_code(scale: int, sigma: float, at: tuple[int, int] = (120, 60)) -> tuple[np.ndarray, int]:
    """A low-contrast code defocused by ``sigma``; returns the frame and the symbol's side in px
    (quiet zone excluded)."""
    buf = io.BytesIO()
    segno.make_qr(TEXT, error="l").save(buf, kind="png", scale=scale, border=4)
    symbol = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    symbol = (symbol.astype(np.float32) * 0.6 + 60).astype(np.uint8)
    frame = np.full((480, 640), 150, np.uint8)
    x, y = at
    frame[y : y + symbol.shape[0], x : x + symbol.shape[1]] = symbol
    return cv2.GaussianBlur(frame, (0, 0), sigma), symbol.shape[0] - 8 * scale


def counted_cascade(max_attempts: int | None = None) -> tuple[CascadeDecoder, list[Counting]]:
    zxing = ZxingDecoder()
    counters = [Counting(zxing), Counting(ZbarDecoder()), Counting(OpenCvDecoder())]
    attempts = [Attempt(a.name, next(c for c in counters if c.name == a.decoder.name), a.fix, a.scale)
                for a in default_attempts(zxing, ZbarDecoder(), OpenCvDecoder())]
    return CascadeDecoder(zxing, attempts, max_attempts=max_attempts), counters


def test_the_test_frames_are_what_they_claim():
    sharp_needed, _ = blurred_code(scale=4, sigma=2.0)
    upscale_needed, _ = blurred_code(scale=2, sigma=1.0)
    for frame in (sharp_needed, upscale_needed):
        scan = ZxingDecoder().scan(frame)
        assert scan.codes == [] and scan.unreadable > 0 and len(scan.regions) == scan.unreadable


def test_frames_zxing_reads_or_sees_nothing_in_cost_one_zxing_call():
    cascade, counters = counted_cascade()
    rng = np.random.default_rng(2)
    readable, _ = blurred_code(scale=4, sigma=0.8)
    frames = [np.full((480, 640), 128, np.uint8), rng.integers(0, 256, (480, 640), dtype=np.uint8), readable]
    results = [cascade.decode(frame) for frame in frames]
    assert results[:2] == [[], []] and [c.text for c in results[2]] == [TEXT]
    assert results[2][0].backend == "zxing"
    assert all(c.shapes == [] for c in counters)  # no rung of the ladder ran
    assert cascade.stats.regions == 0


@pytest.mark.parametrize("scale, sigma, rung", [(4, 2.0, "sharpen+zxing"), (2, 1.0, "upscale-sharpen+zxing")])
def test_a_located_but_unreadable_code_is_read_by_the_ladder_on_its_region_only(scale, sigma, rung):
    frame, side = blurred_code(scale, sigma)
    cascade, counters = counted_cascade()
    (code,) = cascade.decode(frame)
    assert code.text == TEXT and code.backend == rung
    # Corners in frame pixels, despite the crop (and the x2 upscale of the second case).
    x, y = 120 + 4 * scale, 60 + 4 * scale
    expected = [(x, y), (x + side, y), (x + side, y + side), (x, y + side)]
    assert all(abs(px - ex) <= 2 * scale + 2 and abs(py - ey) <= 2 * scale + 2
               for (px, py), (ex, ey) in zip(code.corners, expected, strict=True)), code.corners
    zxing_calls = counters[0].shapes
    assert all(shape[0] < 480 and shape[1] < 640 for shape in zxing_calls)  # regions, never the frame
    assert counters[1].shapes == counters[2].shapes == []  # stopped at the first read, before zbar/opencv
    rungs = [a.name for a in cascade.attempts]
    assert len(zxing_calls) == rungs.index(rung) + 1
    assert cascade.stats.regions == cascade.stats.repaired == 1 and cascade.stats.reads_by == {rung: 1}


def test_the_ladder_is_bounded_and_runs_in_order_when_nothing_reads():
    frame, _ = blurred_code(scale=4, sigma=2.0)
    frame = frame.copy()
    # Wreck the data but keep the finder patterns: located, unreadable by anything.
    frame[60 + 16 + 40 : 60 + 16 + 200, 120 + 16 + 40 : 120 + 16 + 200] = np.random.default_rng(4).integers(
        60, 150, (160, 160), dtype=np.uint8)
    scan = ZxingDecoder().scan(frame)
    assert scan.unreadable > 0
    boxes = located_boxes(scan.regions, *frame.shape)[:2]  # the cascade's max_regions
    ladder = default_attempts(ZxingDecoder(), ZbarDecoder(), OpenCvDecoder())
    for bound in (0, 2, 5, None):
        cascade, counters = counted_cascade(max_attempts=bound)
        assert cascade.decode(frame) == []
        ran = len(counters[0].shapes) + len(counters[1].shapes) + len(counters[2].shapes)
        # Per located region, each of the first ``bound`` rungs, less those whose fix declines
        # the region (no streak to undo).
        expected = sum(1 for x0, y0, x1, y1 in boxes for a in ladder[:bound]
                       if a.fix is None or a.fix(frame[y0:y1, x0:x1]) is not None)
        assert ran == expected == cascade.stats.attempts
        assert expected <= len(boxes) * len(ladder[:bound])
        assert cascade.stats.regions == len(boxes)
        assert cascade.stats.repaired == 0
    assert counters[1].shapes and counters[2].shapes  # the full ladder includes zbar and OpenCV


def test_region_box_grows_by_the_margin_and_clips_to_the_frame():
    corners = ((100, 100), (200, 100), (200, 200), (100, 200))
    assert region_box([corners], 480, 640, margin=0.1) == (82, 82, 219, 219)
    assert region_box([((0, 0), (50, 0), (50, 50), (0, 50))], 480, 640) == (0, 0, 66, 66)
    assert region_box([], 480, 640) is None
    two = region_box([corners, ((400, 300), (450, 300), (450, 350), (400, 350))], 480, 640, margin=0.0)
    assert two == (92, 92, 459, 359)  # one box around both
    assert region_box([((700, 500), (720, 500), (720, 520), (700, 520))], 480, 640) is None  # outside


def test_fixes_keep_the_shape_they_promise_and_accept_strided_views():
    frame, _ = blurred_code(scale=3, sigma=1.2)
    view = frame[50:250, 100:330]
    assert not view.flags.c_contiguous
    for fix, scale in ((repair.sharpen, 1), (repair.adaptive_threshold, 1), (repair.upscale_sharpen, 2),
                       (repair.upscale, 2), (repair.local_contrast, 1), (repair.otsu_threshold, 1),
                       (lambda r: repair.deblur_motion(r, 7), 1), (repair.local_range, 2),
                       (lambda r: repair.deblur_motion(r, 5, angle=0.3), 1)):
        fixed = fix(view)
        assert fixed.dtype == np.uint8 and fixed.shape == (200 * scale, 230 * scale)


def test_deblur_reads_a_code_smeared_by_a_moving_hand():
    buf = io.BytesIO()
    segno.make_qr(TEXT, error="m").save(buf, kind="png", scale=4, border=4)
    symbol = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    frame = np.full((480, 640), 170, np.uint8)
    frame[40 : 40 + symbol.shape[0], 100 : 100 + symbol.shape[1]] = symbol
    streak = np.zeros((7, 7), np.float32)
    streak[3, :] = 1 / 7  # seven pixels, horizontal: under two modules
    smeared = cv2.filter2D(frame, -1, streak, borderType=cv2.BORDER_REPLICATE)
    region = smeared[20 : 60 + symbol.shape[0], 80 : 120 + symbol.shape[1]]
    assert ZxingDecoder().decode(region) == []
    assert abs(np.cos(repair.motion_direction(region))) > 0.95  # the streak runs along x
    assert [c.text for c in ZxingDecoder().decode(repair.deblur_motion(region, 7))] == [TEXT]


def test_on_a_hard_scene_the_cascade_reads_everything_zxing_reads_and_more_never_a_wrong_text():
    script = [Visit(f"QRG1:cascade-{k}:" + "d" * 150, category=category, dwell_s=0.8, gap_s=0.1)
              for k, category in enumerate(("damage", "blur", "glare", "damage"))]
    scene = SyntheticGate(script, seed=3)
    zxing, cascade = ZxingDecoder(), build_decoder()
    frame = np.empty((scene.height, scene.width), np.uint8)
    zxing_reads = cascade_reads = 0
    for index in range(scene.frame_count):
        scene.render(index, frame)
        visit = scene.truth(index)
        scan = zxing.scan(frame)
        codes = cascade.decode(frame)
        expected = script[visit].payload if visit is not None else None
        assert all(c.text == expected for c in codes), index
        if scan.codes:
            assert codes == scan.codes, index  # nothing runs after zxing has read the frame
        elif not scan.regions:
            # Nothing located: the ladder does not run, only the small-code look may read it.
            assert codes == [] or all(c.backend.startswith("small+") for c in codes), index
        zxing_reads += any(c.text == expected for c in scan.codes)
        cascade_reads += bool(codes)
    assert cascade.stats.repaired > 0
    assert cascade_reads == zxing_reads + cascade.stats.repaired + cascade.stats.small_reads


def streak_kernel(length: int, angle_deg: float) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    c = length // 2
    dx, dy = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    cv2.line(kernel, (round(c - dx * c), round(c - dy * c)), (round(c + dx * c), round(c + dy * c)), 1.0, 1)
    return kernel / kernel.sum()


@pytest.mark.parametrize("length, angle", [(5, 0), (7, 45), (9, 90), (7, 135), (9, 30)])
def test_a_streak_is_measured_from_the_region_itself_and_undone(length, angle):
    buf = io.BytesIO()
    segno.make_qr(TEXT, error="m").save(buf, kind="png", scale=3, border=4)
    symbol = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    symbol = (symbol.astype(np.float32) * 0.7 + 40).astype(np.uint8)
    frame = np.full((480, 640), 160, np.uint8)
    frame[40 : 40 + symbol.shape[0], 100 : 100 + symbol.shape[1]] = symbol
    noise = np.random.default_rng(1).normal(0, 2, frame.shape)
    smeared = np.clip(cv2.filter2D(frame, -1, streak_kernel(length, angle), borderType=cv2.BORDER_REPLICATE) + noise,
                      0, 255).astype(np.uint8)
    region = smeared[20 : 60 + symbol.shape[0], 80 : 120 + symbol.shape[1]]
    assert ZxingDecoder().decode(region) == [] and ZbarDecoder().decode(region) == []
    direction = repair.motion_direction(region)
    off = abs((np.degrees(direction) - angle + 90) % 180 - 90)  # a streak has no sense: mod 180
    assert off <= 10
    assert abs(repair.motion_length(region, direction) - length) <= 1
    restored = repair.deblur_estimated(region)
    assert restored is not None and [c.text for c in ZxingDecoder().decode(restored)] == [TEXT]


def test_deblur_estimated_declines_a_region_with_no_streak():
    flat = np.full((120, 120), 128, np.uint8)
    assert repair.motion_length(flat, 0.0) == 0
    assert repair.deblur_estimated(flat) is None


def test_located_boxes_one_per_symbol_largest_first_repeats_dropped():
    small = ((400, 300), (430, 300), (430, 330), (400, 330))
    large = ((100, 100), (200, 100), (200, 200), (100, 200))
    again = ((105, 104), (198, 104), (198, 196), (105, 196))  # the large one reported twice
    boxes = located_boxes([small, large, again], 480, 640, margin=0.0)
    assert boxes == [region_box([large], 480, 640, 0.0), region_box([small], 480, 640, 0.0)]
    assert located_boxes([((900, 900), (910, 900), (910, 910), (900, 910))], 480, 640) == []


def bench_glare_frame(index: int) -> tuple[np.ndarray, str]:
    """Frame ``index`` of the bench's glare stream (its fixed payloads and seed) and its payload."""
    visits, seed = category_script("glare", category_payloads())
    scene = SyntheticGate(visits, seed=seed)
    frame = np.empty((scene.height, scene.width), np.uint8)
    scene.render(index, frame)
    return frame, visits[scene.truth(index)].payload


def test_the_wide_look_reads_a_code_zxing_located_by_one_finder_pattern_under_glare():
    frame, payload = bench_glare_frame(86)  # glare over the top-right finder pattern
    scan = ZxingDecoder().scan(frame)
    assert scan.codes == [] and len(scan.regions) == 1
    (box,) = located_boxes(scan.regions, *frame.shape)
    assert (box[2] - box[0]) < 80  # the located box: one finder's worth, not the code
    zxing, zbar = ZxingDecoder(), ZbarDecoder()
    narrow = CascadeDecoder(zxing, default_attempts(zxing, zbar, OpenCvDecoder()))
    assert narrow.decode(frame) == []  # every rung on the located box fails
    wide = CascadeDecoder(zxing, default_attempts(zxing, zbar, OpenCvDecoder()), wide_attempts=wide_attempts(zbar))
    codes = wide.decode(frame)
    assert [c.text for c in codes] == [payload]
    assert wide.stats.reads_by == {"wide:upscale+zbar": 1}
    x0, _y0, x1, _y1 = box
    assert all(x0 - 2 * (x1 - x0) <= x <= x1 + 2 * (x1 - x0) for x, _ in codes[0].corners)
    assert wide_attempts(None) == []
