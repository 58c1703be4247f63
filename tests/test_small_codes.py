"""The small-code look (decoding/small_codes.py): a code too small for zxing-cpp to locate is found by
its texture and read enlarged; a frame without code-like texture costs no read."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import segno

from qrgate.decoding.cascade import CascadeDecoder
from qrgate.decoding.factory import build_decoder
from qrgate.decoding.small_codes import SmallCodeLook
from qrgate.decoding.zxing import ZxingDecoder
from qrgate_tools.bench_photos import PHOTOS, VIEWS, load_photos

TEXT = "QG1:" + "A" * 120  # 49x49 modules at error level M, like a qrgate pass
AT = (300, 200)  # where the symbol's top-left lies in the frame


def small_code_frame(module_px: float, blur_sigma: float) -> tuple[np.ndarray, int]:
    """A 640x480 frame with the symbol at ``module_px`` pixels per module, blurred as by a lens,
    with sensor noise; and the symbol's side in pixels."""
    buf = io.BytesIO()
    segno.make_qr(TEXT, error="m").save(buf, kind="png", scale=8, border=4)
    symbol = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    side = round(symbol.shape[0] * module_px / 8)
    frame = np.full((480, 640), 140, np.uint8)
    frame[AT[1]:AT[1] + side, AT[0]:AT[0] + side] = cv2.resize(symbol, (side, side), interpolation=cv2.INTER_AREA)
    frame = cv2.GaussianBlur(frame, (0, 0), blur_sigma)
    noise = np.random.default_rng(1).normal(0, 3, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8), side


def test_a_code_zxing_cannot_locate_is_read_by_the_look_with_its_corners_in_frame_pixels() -> None:
    frame, side = small_code_frame(module_px=1.7, blur_sigma=0.9)
    bare = ZxingDecoder(try_invert=True, try_downscale=True).scan(frame)
    assert bare.codes == [] and bare.regions == ()  # the case the look is for: nothing even located

    decoder = build_decoder()
    assert isinstance(decoder, CascadeDecoder)
    codes = decoder.decode(frame)
    assert [code.text for code in codes] == [TEXT]
    assert codes[0].backend.startswith("small+")
    assert decoder.stats.small_reads == 1
    xs = [x for x, _ in codes[0].corners]
    ys = [y for _, y in codes[0].corners]
    # The symbol (with its 4-module quiet zone) spans AT .. AT + side; the corners are the data area's.
    assert AT[0] <= min(xs) < max(xs) <= AT[0] + side
    assert AT[1] <= min(ys) < max(ys) <= AT[1] + side


def test_the_look_finds_the_code_and_nothing_else_in_a_plain_scene() -> None:
    frame, side = small_code_frame(module_px=1.3, blur_sigma=0.7)
    boxes = SmallCodeLook(ZxingDecoder()).candidates(frame)
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert x0 <= AT[0] + side // 4 and x1 >= AT[0] + 3 * side // 4
    assert y0 <= AT[1] + side // 4 and y1 >= AT[1] + 3 * side // 4
    assert (x1 - x0) < 2 * side and (y1 - y0) < 2 * side


@pytest.mark.parametrize("scene", ["flat", "noise", "stripes"])
def test_a_frame_without_code_like_texture_reads_nothing(scene: str) -> None:
    frame = np.full((480, 640), 160, np.uint8)
    if scene == "noise":
        frame = np.clip(np.random.default_rng(2).normal(120, 3, frame.shape), 0, 255).astype(np.uint8)
    elif scene == "stripes":  # text lines and blinds have edges one way only
        frame[::6] = 30
        frame[1::6] = 30

    class Counting(ZxingDecoder):
        calls = 0

        def decode(self, grey: np.ndarray) -> list:
            Counting.calls += 1
            return super().decode(grey)

    look = SmallCodeLook(Counting())
    assert look.read(frame) == []
    assert Counting.calls == 0  # no candidate small enough to be a code, so no read was paid for


def test_max_boxes_is_checked() -> None:
    with pytest.raises(ValueError, match="max_boxes"):
        SmallCodeLook(ZxingDecoder(), max_boxes=0)


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"real photos not found at {PHOTOS}")
def test_on_real_photos_halved_the_look_adds_codes_and_loses_none() -> None:
    with_look = build_decoder()
    without = build_decoder()
    assert isinstance(without, CascadeDecoder)
    without._small_look = None  # the same cascade with the look switched off
    gained = lost = 0
    for photo in load_photos():
        image = VIEWS["halved"](photo.grey)
        by_look = photo.expected in [code.text for code in with_look.decode(image)]
        by_plain = photo.expected in [code.text for code in without.decode(image)]
        gained += by_look and not by_plain
        lost += by_plain and not by_look
    assert lost == 0
    assert gained >= 15  # measured: 100 -> 124 of 137 (docs/performance.md)
