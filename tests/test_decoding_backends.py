"""The zxing-cpp and ZBar backends on rendered codes, real issuers' images and awkward inputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno
import zxingcpp

from qrgate.decoding.base import image_corners
from qrgate.decoding.zbar import ZbarDecoder
from qrgate.decoding.zxing import ZxingDecoder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
QA_IMAGES = SHARED / "dcc-qa-images"
TESTDATA = SHARED / "dcc-testdata"

DECODERS = [ZxingDecoder, ZbarDecoder]
LINEAR_BARCODES = [(zxingcpp.BarcodeFormat.EAN13, "4006381333931"), (zxingcpp.BarcodeFormat.Code128, "QRGATE-128")]


def render_qr(data: str | bytes, scale: int, border: int = 4) -> np.ndarray:
    buf = io.BytesIO()
    segno.make_qr(data).save(buf, kind="png", scale=scale, border=border)
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)


def place(code: np.ndarray, at: tuple[int, int], size: tuple[int, int] = (480, 640), fill: int = 170) -> np.ndarray:
    frame = np.full(size, fill, np.uint8)
    x, y = at
    frame[y : y + code.shape[0], x : x + code.shape[1]] = code
    return frame


def within(point: tuple[int, int], expected: tuple[float, float], tolerance: float) -> bool:
    return abs(point[0] - expected[0]) <= tolerance and abs(point[1] - expected[1]) <= tolerance


@pytest.mark.parametrize("make", DECODERS)
@pytest.mark.parametrize("scale", [2, 3, 5, 8])
def test_reads_a_rendered_code_at_several_module_sizes(make, scale):
    text = "QRG1:pass-0042 check-in at Ben Thanh"
    frame = place(render_qr(text, scale, border=0), at=(150, 90))
    codes = make().decode(frame)
    assert [c.text for c in codes] == [text]
    assert codes[0].backend == make.name


@pytest.mark.parametrize("make", DECODERS)
def test_corners_are_where_the_code_is_clockwise_from_top_left(make):
    code = render_qr("corners", 6, border=0)
    x, y, side = 200, 120, code.shape[0]
    frame = place(code, at=(x, y))
    (decoded,) = make().decode(frame)
    expected = [(x, y), (x + side, y), (x + side, y + side), (x, y + side)]
    assert all(within(p, e, tolerance=6) for p, e in zip(decoded.corners, expected, strict=True)), decoded.corners
    assert all(isinstance(v, int) for p in decoded.corners for v in p)


@pytest.mark.parametrize("make", DECODERS)
@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_corner_order_follows_the_image_not_the_symbol(make, quarter_turns):
    code = np.ascontiguousarray(np.rot90(render_qr("turned", 5, border=0), quarter_turns))
    x, y, side = 180, 100, code.shape[0]
    (decoded,) = make().decode(place(code, at=(x, y)))
    assert decoded.text == "turned"
    assert within(decoded.corners[0], (x, y), 6) and within(decoded.corners[2], (x + side, y + side), 6)


def test_image_corners_orders_any_permutation():
    square = [(10, 10), (50, 12), (48, 52), (8, 50)]
    for shift in range(4):
        shuffled = square[shift:] + square[:shift]
        assert image_corners(reversed(shuffled)) == tuple(square)
    with pytest.raises(ValueError):
        image_corners(square[:3])


@pytest.mark.parametrize("make", DECODERS)
def test_empty_and_noise_frames_give_nothing(make):
    rng = np.random.default_rng(5)
    decoder = make()
    assert decoder.decode(np.full((480, 640), 128, np.uint8)) == []
    assert decoder.decode(rng.integers(0, 256, (480, 640), dtype=np.uint8)) == []
    assert decoder.decode(cv2.GaussianBlur(rng.integers(0, 256, (480, 640), dtype=np.uint8), (0, 0), 2)) == []


def test_inverted_code_is_read_only_when_try_invert_is_on():
    frame = 255 - place(render_qr("light on dark", 4), at=(100, 100))
    assert ZxingDecoder().decode(frame) == []
    assert [c.text for c in ZxingDecoder(try_invert=True).decode(frame)] == ["light on dark"]


@pytest.mark.parametrize("make", DECODERS)
def test_a_strided_y_plane_view_decodes_like_the_contiguous_frame(make):
    frame = place(render_qr("Y plane of a padded YUV420 buffer", 4), at=(60, 40))
    stride = 704  # libcamera pads rows; the chroma planes follow the Y plane
    yuv = np.random.default_rng(1).integers(0, 256, (480 * 3 // 2, stride), dtype=np.uint8)
    yuv[:480, :640] = frame
    y_plane = yuv[:480, :640]
    assert not y_plane.flags.c_contiguous and y_plane.strides == (stride, 1)
    decoder = make()
    assert decoder.decode(y_plane) == decoder.decode(frame) != []


def test_zxing_reads_a_strided_view_without_copying_it():
    # zxing-cpp takes the buffer with its strides: a copy of the view would cost as much memory
    # again as the frame. Measured in a child process so earlier allocations do not mask it.
    probe = """
import resource, numpy as np, zxingcpp
from qrgate.decoding.zxing import ZxingDecoder
base = np.full((6000, 6064), 128, np.uint8)
decoder = ZxingDecoder()
decoder.decode(base[:16, :16])
def growth(image):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    decoder.decode(image)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
strided = growth(base[:, :6000])
print(strided)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    grew_kib = int(out.stdout.strip())
    frame_kib = 6000 * 6000 // 1024
    # zxing's own binarised image is one byte per pixel; a copy of the view would double that.
    assert grew_kib < 1.5 * frame_kib, f"decoding a {frame_kib} KiB view grew the peak RSS by {grew_kib} KiB"


@pytest.mark.parametrize("make", DECODERS)
def test_binary_garbage_payload_does_not_crash(make):
    payload = bytes(range(256)) + os.urandom(64)
    frame = place(render_qr(payload, 3), at=(40, 20))
    codes = make().decode(frame)
    assert len(codes) == 1 and isinstance(codes[0].text, str) and codes[0].text


@pytest.mark.parametrize("make", DECODERS)
def test_utf8_text_comes_back_as_text(make):
    text = "Nguyễn Văn A · vé 12"
    (code,) = make().decode(place(render_qr(text.encode(), 4), at=(100, 100)))
    assert code.text == text


@pytest.mark.parametrize("fmt, content", LINEAR_BARCODES)
def test_zbar_is_restricted_to_qr(fmt, content):
    from pyzbar import pyzbar

    image = np.array(zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(content, fmt), scale=3))
    frame = cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    assert [d.data.decode() for d in pyzbar.decode(frame)] == [content]  # readable when unrestricted
    assert ZbarDecoder().decode(frame) == []


@pytest.mark.parametrize("fmt, content", LINEAR_BARCODES)
def test_zxing_is_restricted_to_qr(fmt, content):
    image = np.array(zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(content, fmt), scale=3))
    frame = cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    assert [b.text for b in zxingcpp.read_barcodes(frame)] == [content]
    assert ZxingDecoder().decode(frame) == []


def test_zbar_without_libzbar_raises_decoder_unavailable():
    # A fresh interpreter where ctypes cannot find libzbar, as on a system without libzbar0.
    probe = """
import ctypes.util
find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "zbar" else find(name)
from qrgate.decoding.zbar import ZbarDecoder
from qrgate.errors import DecoderUnavailable
try:
    ZbarDecoder()
except DecoderUnavailable as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "install libzbar0" in out.stdout


# -- real issuers' codes ---------------------------------------------------------------------------


def require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")


@pytest.mark.parametrize("make", DECODERS)
def test_reads_the_vietnamese_vaccination_pass(make):
    require(QA_IMAGES)
    grey = cv2.imread(str(QA_IMAGES / "VN/1.3.0/VAC_VN.png"), cv2.IMREAD_GRAYSCALE)
    (code,) = make().decode(grey)
    assert code.text.startswith("HC1:") and len(code.text) == 825


@pytest.mark.parametrize("make", DECODERS)
def test_reads_the_singapore_passes(make):
    require(QA_IMAGES)
    images = sorted((QA_IMAGES / "SG").rglob("*.png"))
    assert len(images) == 5
    decoder = make()
    for path in images:
        codes = decoder.decode(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        assert len(codes) == 1 and codes[0].text.startswith("HC1:"), path.name


@pytest.mark.parametrize("make", DECODERS)
def test_reads_every_conformance_vector_png_as_its_prefix_text(make):
    require(TESTDATA)
    images = sorted(TESTDATA.glob("*/png/*.png")) + sorted(TESTDATA.glob("*/2DCode/png/*.png"))
    assert images, "no PNGs in dcc-testdata"
    decoder = make()
    wrong, compared = [], 0
    for path in images:
        country = path.relative_to(TESTDATA).parts[0]
        case = TESTDATA / country / "2DCode" / "raw" / f"{path.stem}.json"
        codes = decoder.decode(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        expected = json.loads(case.read_text()).get("PREFIX") if case.exists() else None
        if len(codes) != 1 or (expected is not None and codes[0].text != expected):
            wrong.append(str(path.relative_to(TESTDATA)))
        compared += expected is not None
    assert not wrong, f"{len(wrong)} of {len(images)} not read as expected: {wrong[:10]}"
    assert compared > 0.9 * len(images)
