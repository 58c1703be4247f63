"""FallbackDecoder (when the second backend is asked) and build_decoder (what gets built).

The cascade itself (the repair ladder) is tested in test_decoding_cascade.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import segno

from qrgate.config import LADDER_RUNGS, DecoderConfig
from qrgate.decoding.base import DecodedCode
from qrgate.decoding.cascade import CascadeDecoder
from qrgate.decoding.chain import FallbackDecoder
from qrgate.decoding.factory import build_decoder
from qrgate.decoding.zbar import ZbarDecoder
from qrgate.decoding.zxing import ZxingDecoder
from qrgate.frames.synthetic import SyntheticGate, Visit


class Counting:
    """A real decoder that counts how often it is asked."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        self.calls += 1
        return self.inner.decode(grey)


def render_qr(text: str, scale: int = 4) -> tuple[np.ndarray, segno.QRCode]:
    qr = segno.make_qr(text, error="l")
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=scale, border=4)
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE), qr


def damaged_frame() -> np.ndarray:
    """A QR whose finder patterns are intact but whose data region is corrupted beyond repair."""
    image, qr = render_qr("HC1:" + "6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3" * 8)
    frame = np.full((480, 640), 200, np.uint8)
    frame[40 : 40 + image.shape[0], 100 : 100 + image.shape[1]] = image
    rng = np.random.default_rng(1)
    modules = qr.symbol_size(scale=1, border=0)[0]
    for _ in range(90):
        my, mx = rng.integers(10, modules - 10, 2)
        y, x = 40 + 16 + my * 4, 100 + 16 + mx * 4
        frame[y : y + 4, x : x + 4] = 255 - frame[y : y + 4, x : x + 4]
    return frame


def test_the_damaged_frame_is_located_but_unreadable_by_zxing():
    scan = ZxingDecoder().scan(damaged_frame())
    assert scan.codes == [] and scan.unreadable >= 1


def test_fallback_is_asked_only_about_a_located_but_unreadable_code():
    clean, _ = render_qr("readable")
    readable = np.full((480, 640), 200, np.uint8)
    readable[50 : 50 + clean.shape[0], 50 : 50 + clean.shape[1]] = clean
    empty = np.full((480, 640), 120, np.uint8)
    noise = np.random.default_rng(3).integers(0, 256, (480, 640), dtype=np.uint8)

    fallback = Counting(ZbarDecoder())
    chain = FallbackDecoder(ZxingDecoder(), fallback)
    assert [c.text for c in chain.decode(readable)] == ["readable"]
    assert chain.decode(empty) == [] and chain.decode(noise) == []
    assert fallback.calls == 0

    assert chain.decode(damaged_frame()) == []
    assert fallback.calls == 1 == chain.fallback_calls
    assert chain.fallback_reads == 0
    assert chain.name == "zxing+zbar"


def test_on_a_scene_the_chain_returns_the_fallbacks_reading_exactly_when_zxing_located_but_failed():
    # A hard scene (2.2 px modules, much blur) where some frames show a code zxing locates but
    # cannot read; seed 2 contains one that ZBar reads.
    script = [
        Visit(f"QRGATE-FALLBACK-{k}-" + "Z" * 60, module_px=2.2, blur_share=0.4, dwell_s=1.0, gap_s=0.2)
        for k in range(4)
    ]
    scene = SyntheticGate(script, seed=2)
    zxing, zbar = ZxingDecoder(), ZbarDecoder()
    fallback = Counting(ZbarDecoder())
    chain = FallbackDecoder(ZxingDecoder(), fallback)
    frame = np.empty((scene.height, scene.width), np.uint8)
    expected_calls = 0
    for index in range(scene.frame_count):
        scene.render(index, frame)
        scan = zxing.scan(frame)
        needs_fallback = not scan.codes and scan.unreadable > 0
        expected_calls += needs_fallback
        expected = zbar.decode(frame) if needs_fallback else scan.codes
        assert chain.decode(frame) == expected, index
    assert fallback.calls == expected_calls == chain.fallback_calls > 0
    assert chain.fallback_reads > 0


def test_a_primary_that_cannot_report_unreadable_codes_falls_back_on_every_unread_frame():
    clean, _ = render_qr("zbar first")
    readable = np.full((480, 640), 200, np.uint8)
    readable[50 : 50 + clean.shape[0], 50 : 50 + clean.shape[1]] = clean
    fallback = Counting(ZxingDecoder())
    chain = FallbackDecoder(ZbarDecoder(), fallback)
    assert [c.backend for c in chain.decode(readable)] == ["zbar"]
    assert fallback.calls == 0
    assert chain.decode(np.full((480, 640), 120, np.uint8)) == []
    assert fallback.calls == 1


# -- build_decoder -----------------------------------------------------------------------------------


def test_default_is_the_zxing_cascade_with_zbar_and_opencv_in_its_ladder():
    decoder = build_decoder()
    assert isinstance(decoder, CascadeDecoder) and decoder.name == "zxing+repair"
    assert len(decoder.attempts) == 8  # the default bound
    # The warped-grid reader (a bent or wrinkled code) is the last of the gate's rungs.
    assert {a.decoder.name for a in decoder.attempts} == {"zxing", "zbar", "warped"}
    assert decoder.attempts[-1].decoder.name == "warped"
    everything = build_decoder(DecoderConfig(max_repairs=LADDER_RUNGS))
    assert {a.decoder.name for a in everything.attempts} == {"zxing", "zbar", "opencv", "warped"}
    assert len(everything.attempts) > len(decoder.attempts)
    assert len(everything.attempts) == LADDER_RUNGS  # config.py's bound on max_repairs is the whole ladder


@pytest.mark.parametrize("backend, fallback, repair, name, kind", [
    ("zxing", "none", True, "zxing+repair", CascadeDecoder),
    ("zxing", "zbar", False, "zxing+zbar", FallbackDecoder),
    ("zxing", "none", False, "zxing", ZxingDecoder),
    ("zbar", "none", True, "zbar", ZbarDecoder),
    ("zbar", "zxing", True, "zbar+zxing", FallbackDecoder),
])
def test_builds_the_named_combination(backend, fallback, repair, name, kind):
    decoder = build_decoder(DecoderConfig(backend=backend, fallback=fallback, repair=repair))
    assert isinstance(decoder, kind) and decoder.name == name


def test_no_zbar_rung_without_the_zbar_fallback():
    decoder = build_decoder(DecoderConfig(fallback="none", max_repairs=LADDER_RUNGS))
    assert "zbar" not in {a.decoder.name for a in decoder.attempts}


# The options are the config section itself: a name outside it, or a fallback that is the backend again,
# is refused where the options are made, with the field named (before: by build_decoder, as a ValueError).
@pytest.mark.parametrize("backend, fallback, field", [
    ("quirc", "none", "backend"), ("zxing", "opencv", "fallback"), ("ZXING", "none", "backend"),
    ("zxing", "zxing", "must differ"), ("zbar", "zbar", "must differ"),
])
def test_unknown_names_are_rejected_listing_the_valid_ones(backend, fallback, field):
    with pytest.raises(ValueError, match=field):
        DecoderConfig(backend=backend, fallback=fallback)


def test_zxing_options_reach_zxing():
    inverted = 255 - np.pad(render_qr("inverted")[0], 40, constant_values=255)
    assert build_decoder(DecoderConfig(fallback="none", try_invert=False)).decode(inverted) == []
    # on by default
    assert [c.text for c in build_decoder(DecoderConfig(fallback="none")).decode(inverted)] == ["inverted"]


def test_zxing_options_are_ignored_without_zxing():
    # On by default: a ZBar gate must start without turning them off, and ZBar has no equivalents.
    decoder = build_decoder(DecoderConfig(backend="zbar", fallback="none", try_invert=True))
    assert isinstance(decoder, ZbarDecoder)
    assert [c.text for c in decoder.decode(np.pad(render_qr("plain")[0], 40, constant_values=255))] == ["plain"]


def test_missing_fallback_library_degrades_to_the_primary_with_one_warning():
    # A fresh interpreter where libzbar cannot be found; decode many frames, count warnings.
    probe = """
import ctypes.util, json, logging
find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "zbar" else find(name)
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.levelname, record.getMessage()))
logging.getLogger().addHandler(Keep())
import numpy as np
from qrgate.decoding.factory import build_decoder
from qrgate.config import LADDER_RUNGS, DecoderConfig
decoder = build_decoder(DecoderConfig(max_repairs=LADDER_RUNGS))
for _ in range(20):
    decoder.decode(np.full((120, 160), 99, np.uint8))
print(json.dumps({"name": decoder.name, "rungs": [a.decoder.name for a in decoder.attempts], "records": records}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["name"] == "zxing+repair" and "zbar" not in result["rungs"] and "zxing" in result["rungs"]
    assert len(result["records"]) == 1
    level, message = result["records"][0]
    assert level == "WARNING" and "install libzbar0" in message


def test_missing_primary_library_raises():
    probe = """
import ctypes.util
find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "zbar" else find(name)
from qrgate.config import DecoderConfig
from qrgate.decoding.factory import build_decoder
from qrgate.errors import DecoderUnavailable
try:
    build_decoder(DecoderConfig(backend="zbar", fallback="none"))
except DecoderUnavailable:
    print("unavailable")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unavailable"
