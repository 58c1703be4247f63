"""Real photos (../shared/qr-photos, the zxing-cpp project's samples: nobody here made them): the
gate's decoder and ``qrgate scan`` read at least every photo a bare zxing-cpp call reads, in every
view the bench measures (as captured, scaled to fill 640x480 and 1280x720, halved), and as taken
the gate's decoder meets the issue's target against it (+5 points pooled and on the mean of the
folders, none more than 2 points below)."""

from __future__ import annotations

import statistics

import pytest

from qrgate.decoding.factory import build_decoder, build_photo_decoder
from qrgate_tools.bench_photos import PHOTOS, VIEWS, bare_texts, load_photos

if not PHOTOS.is_dir():
    pytest.skip(f"real photos not found at {PHOTOS} (the shared/ checkout next to the repository)",
                allow_module_level=True)

PHOTO_SET = load_photos()


def test_the_set_is_all_there() -> None:
    assert len(PHOTO_SET) == 137 and len({photo.condition for photo in PHOTO_SET}) == 6


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_the_chains_read_every_photo_bare_zxing_reads(view: str) -> None:
    gate, scan = build_decoder(), build_photo_decoder()
    bare_read = gate_read = scan_read = 0
    missed: list[str] = []
    for photo in PHOTO_SET:
        image = VIEWS[view](photo.grey)
        by_bare = photo.expected in bare_texts(image)
        by_gate = photo.expected in [code.text for code in gate.decode(image)]
        by_scan = photo.expected in [code.text for code in scan.decode(image)]
        bare_read += by_bare
        gate_read += by_gate
        scan_read += by_scan
        if by_bare and not by_gate:
            missed.append(f"gate {photo.condition}/{photo.name}")
        if by_bare and not by_scan:
            missed.append(f"scan {photo.condition}/{photo.name}")
    assert not missed, missed
    assert gate_read >= bare_read and scan_read >= gate_read
    assert bare_read >= 60  # the view is not empty of readable photos: the comparison means something


def test_scan_reads_more_than_bare_zxing_where_codes_are_small() -> None:
    # Halved, modules of 1-2 px: the upscaled whole-image pass is the lever (bench: 112 against 69).
    bare = scan = 0
    decoder = build_photo_decoder()
    for photo in PHOTO_SET:
        image = VIEWS["halved"](photo.grey)
        bare += photo.expected in bare_texts(image)
        scan += photo.expected in [code.text for code in decoder.decode(image)]
    assert scan >= bare + 30


def test_as_taken_the_gate_reads_five_points_more_than_bare_zxing_pooled_and_per_folder() -> None:
    # Measured: 125 -> 136 of 137; the folder of labels on wrinkled fabric (qrcode-4) 15 -> 23 of
    # 24 (the warped-grid rung), artistic codes with a picture in the modules (qrcode-2) 53 -> 56.
    gate = build_decoder()
    by_folder: dict[str, list[tuple[bool, bool]]] = {}
    for photo in PHOTO_SET:
        read = (photo.expected in bare_texts(photo.grey), photo.expected in [c.text for c in gate.decode(photo.grey)])
        by_folder.setdefault(photo.condition, []).append(read)
    pairs = [pair for reads in by_folder.values() for pair in reads]
    pooled_gain = 100.0 * (sum(g for _, g in pairs) - sum(b for b, _ in pairs)) / len(pairs)
    gains = {folder: 100.0 * (sum(g for _, g in reads) - sum(b for b, _ in reads)) / len(reads)
             for folder, reads in by_folder.items()}
    assert pooled_gain >= 5.0
    assert statistics.fmean(gains.values()) >= 5.0
    assert min(gains.values()) >= -2.0
