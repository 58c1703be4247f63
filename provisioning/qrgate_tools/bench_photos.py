"""``qrgate bench`` section "photos": the decoder chains against a bare zxing-cpp call on real photos.

The photos are ../shared/qr-photos (137 photos of QR codes from the zxing-cpp project's test
samples, phones and cameras 2008-2024, each with its expected text): material nobody here made.
Its folders are the conditions (qrcode-1 ... qrcode-6). Every photo is under 640x480, so "full
size" is also each photo's 640x480 and 1280x720 frame; the views add what a gate's frame does to
a code: each photo scaled to fill a 640x480 and a 1280x720 frame (a code held close: enlarged,
modules several times larger), and halved (a code at arm's length: fewer pixels per module).

Two chains: ``gate`` (``build_decoder()``, what the gate runs on each frame) and ``scan``
(``build_photo_decoder()``, ``qrgate scan``). A photo counts as read when the expected text is
among the codes read. The baseline is ``zxingcpp.read_barcodes(photo)`` at its defaults; its text
is taken in both of zxing-cpp's text modes, so a payload with control characters is not a miss of
the baseline's (the chains read in Plain mode).

Targets, each printed MET or NOT MET: every photo bare zxing-cpp reads, the chain reads too (the
test tests/test_photos.py asserts the same); and, as at the synthetic frame sizes, + 5 points
pooled and on the mean of conditions with no condition more than 2 points below.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zxingcpp

from qrgate.decoding.base import DecodedCode
from qrgate.decoding.factory import build_decoder, build_photo_decoder

from .bench_sizes import POINTS_SLACK, TARGET_GAIN_POINTS, TARGET_WORST_CONDITION_POINTS

PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "qr-photos"  # beside the checkout
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True, slots=True)
class Photo:
    condition: str  # the folder
    name: str
    grey: np.ndarray
    expected: str


def load_photos(root: Path = PHOTOS) -> list[Photo]:
    """Every photo under ``root`` with its ``NAME.txt`` beside it (other files are ignored)."""
    photos = []
    for path in sorted(root.glob("*/*")):
        text = path.with_suffix(".txt")
        if path.suffix.lower() not in IMAGE_SUFFIXES or not text.exists():
            continue
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is not None:
            photos.append(Photo(path.parent.name, path.name, grey, text.read_bytes().decode("utf-8", "replace")))
    return photos


def fill(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """``grey`` scaled (up or down) to fit ``width`` x ``height``: bicubic up, area-averaged down."""
    h, w = grey.shape
    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "full size": lambda grey: grey,
    "fill 640x480": lambda grey: fill(grey, 640, 480),
    "fill 1280x720": lambda grey: fill(grey, 1280, 720),
    "halved": lambda grey: cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
}


def bare_texts(grey: np.ndarray) -> set[str]:
    """What bare zxing-cpp reads, in both text modes (see the module docstring)."""
    return ({code.text for code in zxingcpp.read_barcodes(grey)}
            | {code.text for code in zxingcpp.read_barcodes(grey, text_mode=zxingcpp.TextMode.Plain)})


def _met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def view_section(view: str, photos: list[Photo], chains: Mapping[str, Callable[[np.ndarray], list[DecodedCode]]],
                 out: Callable[[str], None]) -> dict[str, object]:
    images = [VIEWS[view](photo.grey) for photo in photos]
    read: dict[str, list[bool]] = {}
    ms: dict[str, list[float]] = {}
    for name, decode in (("bare", None), *chains.items()):
        read[name], ms[name] = [], []
        for photo, image in zip(photos, images, strict=True):
            start = time.perf_counter()
            if decode is None:
                found = [code.text for code in zxingcpp.read_barcodes(image)]
            else:
                found = [code.text for code in decode(image)]
            ms[name].append((time.perf_counter() - start) * 1000.0)
            read[name].append(photo.expected in (bare_texts(image) if decode is None else found))
    conditions = sorted({photo.condition for photo in photos})

    def rate(name: str, condition: str | None = None) -> float:
        hits = [r for r, photo in zip(read[name], photos, strict=True)
                if condition is None or photo.condition == condition]
        return 100.0 * statistics.fmean(hits)

    chain_results: dict[str, dict[str, object]] = {}
    result: dict[str, object] = {"photos": len(photos), "chains": chain_results}
    def row(label: str, name: str) -> str:
        cells = "  ".join(f"{c[-1]}:{rate(name, c):3.0f}" for c in conditions)
        mean = statistics.fmean(rate(name, c) for c in conditions)
        return (f"  {label:14} {name:6} {sum(read[name]):3d}/{len(photos)}  pooled {rate(name):5.1f}%  mean "
                f"{mean:5.1f}%  median {statistics.median(ms[name]):6.2f} ms  [{cells}]")

    out(row(view, "bare"))
    for name in chains:
        missed = [photo.name for photo, b, r in zip(photos, read["bare"], read[name], strict=True) if b and not r]
        pooled_gain = rate(name) - rate("bare")
        mean_gain = statistics.fmean(rate(name, c) - rate("bare", c) for c in conditions)
        worst = min(conditions, key=lambda c: rate(name, c) - rate("bare", c))
        worst_gap = rate(name, worst) - rate("bare", worst)
        out(row("", name))
        checks = {"superset": not missed, "pooled": pooled_gain >= TARGET_GAIN_POINTS - POINTS_SLACK,
                  "mean": mean_gain >= TARGET_GAIN_POINTS - POINTS_SLACK,
                  "worst_condition": worst_gap >= TARGET_WORST_CONDITION_POINTS - POINTS_SLACK}
        out(f"  {'':14} {'':6} [{_met(checks['superset']):7}] reads every photo bare zxing-cpp reads"
            + (f" (missed: {', '.join(missed)})" if missed else "")
            + f"; [{_met(checks['pooled']):7}] pooled {pooled_gain:+.1f}; [{_met(checks['mean']):7}] mean "
            f"{mean_gain:+.1f}; [{_met(checks['worst_condition']):7}] worst condition {worst} {worst_gap:+.1f} "
            f"(targets +{TARGET_GAIN_POINTS:.0f}, +{TARGET_GAIN_POINTS:.0f}, >= {TARGET_WORST_CONDITION_POINTS:+.0f})")
        chain_results[name] = {"read": sum(read[name]), "pooled_gain": pooled_gain, "mean_gain": mean_gain,
                                  "worst_condition": [worst, worst_gap], "missed_of_bare": missed,
                                  "median_ms": statistics.median(ms[name]), "targets": checks}
    result["bare"] = {"read": sum(read["bare"]), "median_ms": statistics.median(ms["bare"])}
    return result


def bench_photos(*, root: Path = PHOTOS, out: Callable[[str], None] = print) -> dict[str, object]:
    photos = load_photos(root) if root.is_dir() else []
    if not photos:
        out(f"real photos: none found at {root} (the shared/ checkout next to the repository); section skipped")
        return {"skipped": str(root)}
    out(f"real photos ({root}): {len(photos)} photos in {len({p.condition for p in photos})} conditions; "
        "photos read (expected text among the codes), per condition 1-6")
    gate, scan = build_decoder(), build_photo_decoder()
    chains = {"gate": gate.decode, "scan": scan.decode}
    results: dict[str, object] = {view: view_section(view, photos, chains, out) for view in VIEWS}
    out("")
    return results
