"""Codes zxing-cpp does not locate, or locates and cannot sample: the ladder on code-like texture
(CascadeDecoder.read_unlocated), the memory that keeps it off the scene's own clutter
(StaticTexture), and the warped-grid reader for a bent code (decoding/warped.py)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import segno
import zxingcpp

from qrgate.decoding.cascade import CascadeDecoder
from qrgate.decoding.factory import build_decoder
from qrgate.decoding.small_codes import StaticTexture
from qrgate.decoding.warped import WarpedGridDecoder, unwrap
from qrgate.decoding.zxing import ZxingDecoder


def symbol(text: str, scale: int) -> np.ndarray:
    buf = io.BytesIO()
    segno.make_qr(text, error="m").save(buf, kind="png", scale=scale, border=4)
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def noisy(frame: np.ndarray, seed: int = 1) -> np.ndarray:
    return np.clip(frame + np.random.default_rng(seed).normal(0, 2, frame.shape), 0, 255).astype(np.uint8)


def cascade() -> CascadeDecoder:
    decoder = build_decoder()
    assert isinstance(decoder, CascadeDecoder)
    return decoder


# -- the texture ladder ----------------------------------------------------------------------------


def streaked_code(text: str) -> np.ndarray:
    """A code of 5 px modules smeared by an 11 px horizontal streak (a hand moving fast)."""
    frame = np.full((480, 640), 120, np.uint8)
    code = symbol(text, 5)
    frame[60:60 + code.shape[0], 150:150 + code.shape[1]] = code
    streak = np.zeros((11, 11), np.float32)
    streak[5, :] = 1 / 11
    return noisy(cv2.filter2D(frame, -1, streak))


def test_a_code_zxing_does_not_locate_is_found_by_its_texture_and_laddered() -> None:
    text = "QG1:streaked-" + "s" * 60
    frame = streaked_code(text)
    bare = ZxingDecoder(try_invert=True, try_downscale=True).scan(frame)
    assert bare.codes == [] and bare.regions == ()  # nothing located: the located-symbol ladder never runs

    decoder = cascade()
    codes = decoder.decode(frame)
    assert [code.text for code in codes] == [text]
    assert codes[0].backend == "deblur+zxing" and decoder.stats.texture_reads == 1
    xs = [x for x, _ in codes[0].corners]
    assert 150 <= min(xs) < max(xs) <= 150 + 225 + 11  # in frame pixels, within the smeared symbol

    without = cascade()
    without._small_look = None  # the same cascade without the texture map
    assert without.decode(frame) == []


def grille() -> np.ndarray:
    """Code-like clutter: a square of random dark and light cells with no finder pattern."""
    cells = np.random.default_rng(4).random((40, 40)) < 0.5
    frame = np.full((480, 640), 150, np.uint8)
    frame[100:300, 200:400] = cv2.resize(np.where(cells, 30, 220).astype(np.uint8), (200, 200),
                                         interpolation=cv2.INTER_NEAREST)
    return frame


def test_the_scenes_own_clutter_is_laddered_once_then_only_every_nth_time() -> None:
    memory = StaticTexture(retry_every=4)
    decoder = build_decoder(static_texture=memory)
    assert isinstance(decoder, CascadeDecoder)
    laddered = []
    for n in range(9):
        assert decoder.decode(noisy(grille(), seed=n)) == []
        laddered.append(decoder.stats.regions)
    # The first frame pays a ladder; the same box with the same texture is then skipped three
    # times and retried on the fourth (a code held still might read on a later frame).
    assert laddered == [1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert memory.skipped == 6

    stateless = cascade()  # no memory (a photo, a test): every frame is laddered
    for n in range(3):
        stateless.decode(noisy(grille(), seed=n))
    assert stateless.stats.regions == 3


def test_static_texture_matches_the_same_box_forgets_a_read_one_and_checks_its_arguments() -> None:
    memory = StaticTexture(retry_every=10)
    box = (100, 100, 300, 300)
    assert memory.fresh(box, 60.0, 640)
    memory.failed(box, 60.0, 640)
    assert not memory.fresh((103, 98, 302, 301), 64.0, 640)  # within 2 % of the width, 15 % of the edges
    assert memory.fresh((140, 100, 340, 300), 60.0, 640)  # moved: a new box
    assert memory.fresh(box, 80.0, 640)  # other texture in the same place: a code held up there
    memory.read(box, 640)
    assert memory.fresh(box, 60.0, 640)  # a code was read there: it was never clutter
    for bad in ({"size": 0}, {"slack": -0.1}, {"retry_every": 0}):
        with pytest.raises(ValueError):
            StaticTexture(**bad)


# -- the warped grid -------------------------------------------------------------------------------


def bent_code(text: str, module_px: int, fold_modules: float, wavelength_modules: float) -> np.ndarray:
    """A code on a wavy surface: each point moved by up to ``fold_modules`` modules, in waves
    ``wavelength_modules`` long across both axes (a pass bent in the hand, a label on fabric)."""
    code = symbol(text, module_px)
    frame = np.full((480, 640), 90, np.uint8)
    top, left = (480 - code.shape[0]) // 2, (640 - code.shape[1]) // 2
    frame[top:top + code.shape[0], left:left + code.shape[1]] = code
    ys, xs = np.mgrid[0:480, 0:640].astype(np.float32)
    amplitude = fold_modules * module_px
    k = 2 * np.pi / (wavelength_modules * module_px)
    bent = cv2.remap(frame, xs + amplitude * np.sin(ys * k), ys + amplitude * np.sin(xs * k * 0.8 + 1.0),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.GaussianBlur(bent, (0, 0), 0.7)


def test_a_bent_code_zxing_locates_but_cannot_sample_is_read_on_its_own_grid() -> None:
    text = "QG1:bent-pass-" + "b" * 40
    frame = bent_code(text, 6, 0.45, 16)
    located = zxingcpp.read_barcodes(frame, formats=zxingcpp.BarcodeFormat.QRCode, return_errors=True)
    assert located and not any(barcode.valid for barcode in located)  # found, bits wrong
    assert all(b.error is not None and b.error.type == zxingcpp.ErrorType.Checksum for b in located)

    codes = WarpedGridDecoder().decode(frame)
    assert [code.text for code in codes] == [text]
    xs = [x for x, _ in codes[0].corners]
    ys = [y for _, y in codes[0].corners]
    side = symbol(text, 6).shape[0] - 8 * 6  # without the quiet zone
    assert abs((max(xs) - min(xs)) - side) < 0.15 * side and abs((max(ys) - min(ys)) - side) < 0.15 * side
    # ... and the gate's cascade reads it with that rung.
    assert [(code.text, code.backend) for code in cascade().decode(frame)] == [(text, "warped+zxing")]


def test_the_warped_reader_reads_nothing_where_there_is_no_grid_to_follow() -> None:
    reader = WarpedGridDecoder()
    assert reader.decode(np.full((240, 320), 128, np.uint8)) == []
    assert reader.decode(grille()) == []
    flat = np.pad(symbol("QG1:flat", 4), 20, constant_values=255)
    assert reader.decode(flat) == []  # readable as it is: the plain rungs' business
    damaged = flat.copy()
    damaged[60:120, 40:140] = 0  # a third of the symbol blacked out: beyond error correction
    assert reader.decode(damaged) == []


def test_unwrap_recovers_a_shift_of_more_than_half_a_module() -> None:
    ys, xs = np.mgrid[0:33, 0:33]
    true = 4.0 * np.sin(ys / 6.0) + 0.1 * xs + 2.0 * np.cos(xs / 5.0)  # radians: up to 1.1 turns
    wrapped = (true + np.pi) % (2 * np.pi) - np.pi
    recovered = unwrap(wrapped)
    assert np.abs(recovered - true).max() < 1e-6
