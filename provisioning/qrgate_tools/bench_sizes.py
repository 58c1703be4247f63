"""``qrgate bench`` section "sizes": the gate's decoder chain against a bare zxing-cpp call, per scene
condition, at the three frame sizes a gate's camera gives it.

The sizes: 640x480 (the Pi camera's default lores stream), 1280x720, and 2304x1296 (Camera Module
3's full field of view binned 2x2, the largest stream it delivers at 30 fps). The synthetic scene
scales with the frame (a wider frame sees the same code, hand and blur with more pixels), and
every condition it renders is one of ``scene_effects.CATEGORIES``.

The baseline is what the issue defines: ``zxingcpp.read_barcodes(frame)`` with the library's
defaults (every format, try_rotate, try_invert, try_downscale). Its cost is dominated by the 1-D
readers a QR gate does not need, so the cost of the same call restricted to QR
(``ZxingDecoder()``, the fast call the cascade's ladder rungs use) is printed beside it too.
The chain is the pipeline the gate runs (presence gate, tracker, cascade), in stream order.

Targets, each printed MET or NOT MET (issue 10): read rate at least bare zxing-cpp + 5 points
pooled and on the mean of conditions, no condition more than 2 points below it, the empty-frame
cost at most 1.2x a bare call, the median on frames with a code at most 2x.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import zxingcpp

from qrgate.decoding.factory import build_pipeline
from qrgate.decoding.zxing import ZxingDecoder
from qrgate.frames.scene_effects import CATEGORIES, CATEGORY_MEDIUM, Category
from qrgate.frames.synthetic import SyntheticGate, Visit

FRAME_SIZES = ((640, 480), (1280, 720), (2304, 1296))
TARGET_GAIN_POINTS = 5.0
TARGET_WORST_CONDITION_POINTS = -2.0
TARGET_EMPTY_RATIO = 1.2
TARGET_MEDIAN_RATIO = 2.0
# Gains are differences of float percentages: a gain of exactly 5 points came out as 4.9999999 and
# printed "+5.0 NOT MET". Compared with this much slack (far below one frame in a thousand).
POINTS_SLACK = 1e-9


class HasText(Protocol):
    """A code read by a decoder: a DecodedCode or a zxingcpp.Barcode."""

    @property
    def text(self) -> str: ...


@dataclass(slots=True)
class Run:
    """One decoder over one stream: per frame, the time (ms, best of the repeats) and whether the
    expected code was read."""

    ms: list[float]
    read: list[bool]


def category_payloads() -> list[str]:
    """Fixed payloads shaped like the demo's passes (HC1 vaccination passes of 570 and 860
    characters, qrgate passes of about 220, a short URL): the demo mints new keys on every run,
    and a new signature is a different QR symbol, so the per-category rates would wander by a few
    points between runs; with these, the frames are the same in every run."""
    rng = np.random.default_rng(2024)
    base45 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"))
    shapes = (("HC1:", 856), ("QG1:", 216), ("HC1:", 566), ("https://example.com/", 4), ("QG1:", 221))
    return [prefix + "".join(rng.choice(base45, length)) for prefix, length in shapes]


def category_script(category: Category, payloads: Sequence[str], visits: int = 5) -> tuple[list[Visit], int]:
    """The per-category script for ``category`` and the scene seed it renders with: ``visits``
    visits of 1.0 s code and 0.8 s empty scene, phone and paper in turn where the category allows
    either."""
    c = CATEGORIES.index(category)
    either = CATEGORY_MEDIUM[category] is None
    script = [Visit(payloads[(c + k) % len(payloads)], dwell_s=1.0, gap_s=0.8, category=category,
                    medium=("phone", "paper")[k % 2] if either else None)
              for k in range(visits)]
    return script, 21 + c


def stream(visits: list[Visit], width: int, height: int, seed: int) -> tuple[list[np.ndarray], list[str | None]]:
    """Every frame of the script, in order, with the payload in view (None: no code)."""
    frames: list[np.ndarray] = []
    truths: list[str | None] = []
    scene = SyntheticGate(visits, width, height, realtime=False, seed=seed)
    for index in range(scene.frame_count):
        grey = np.empty((height, width), np.uint8)
        scene.render(index, grey)
        visit = scene.truth(index)
        frames.append(grey)
        truths.append(visits[visit].payload if visit is not None else None)
    return frames, truths


def run_stateless(decode: Callable[[np.ndarray], Sequence[HasText]], frames: list[np.ndarray],
                  truths: list[str | None], repeat: int, text_of: Callable[[HasText], str] | None = None) -> Run:
    """``decode`` on each frame alone; ``text_of`` reads a result's text (default: ``.text``)."""
    text_of = text_of or _code_text
    best = [float("inf")] * len(frames)
    read = [False] * len(frames)
    for _ in range(repeat):
        for n, grey in enumerate(frames):
            start = time.perf_counter()
            found = decode(grey)
            best[n] = min(best[n], (time.perf_counter() - start) * 1000.0)
            read[n] = truths[n] is not None and any(text_of(code) == truths[n] for code in found)
    return Run(best, read)


def run_pipeline(frames: list[np.ndarray], truths: list[str | None], repeat: int) -> Run:
    """The production pipeline, in stream order and from a fresh state on each repeat: its presence
    gate and tracker depend on the frames before."""
    best = [float("inf")] * len(frames)
    read = [False] * len(frames)
    for _ in range(repeat):
        pipeline = build_pipeline()
        for n, grey in enumerate(frames):
            start = time.perf_counter()
            codes = pipeline.decode(grey)
            best[n] = min(best[n], (time.perf_counter() - start) * 1000.0)
            read[n] = truths[n] is not None and any(code.text == truths[n] for code in codes)
    return Run(best, read)


def bare_zxing(grey: np.ndarray) -> list[zxingcpp.Barcode]:
    """The baseline: zxing-cpp's own defaults, nothing chosen for it."""
    return zxingcpp.read_barcodes(grey)


def _code_text(code: HasText) -> str:
    return code.text


def _met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def size_section(width: int, height: int, visits: int, repeat: int, out: Callable[[str], None]) -> dict[str, object]:
    """Every condition at one frame size: read rates of bare zxing-cpp and the chain, then the targets."""
    payloads = category_payloads()
    fast = ZxingDecoder()
    rows: dict[str, dict[str, float]] = {}
    pooled: dict[str, list[bool]] = {"bare": [], "chain": []}
    ms: dict[str, list[float]] = {
        "bare_code": [], "bare_empty": [], "fast_code": [], "fast_empty": [], "chain_code": [], "chain_empty": []}
    out(f"{width}x{height}: {visits} visits per condition (1.0 s code, 0.8 s empty), frames with a code read; "
        "bare = zxingcpp.read_barcodes(frame) at its defaults; chain = the gate's pipeline in stream order")
    out(f"{'condition':10} {'frames':>6} {'bare':>6} {'chain':>6} {'gain':>6}")
    for category in CATEGORIES:
        script, seed = category_script(category, payloads, visits)
        frames, truths = stream(script, width, height, seed)
        coded = [n for n, t in enumerate(truths) if t is not None]
        empty = [n for n, t in enumerate(truths) if t is None]
        bare = run_stateless(bare_zxing, frames, truths, 1)
        quick = run_stateless(fast.decode, frames, truths, repeat)
        chain = run_pipeline(frames, truths, repeat)
        rate_bare = 100.0 * sum(bare.read[n] for n in coded) / len(coded)
        rate_chain = 100.0 * sum(chain.read[n] for n in coded) / len(coded)
        rows[category] = {"frames": len(coded), "bare": rate_bare, "chain": rate_chain}
        pooled["bare"].extend(bare.read[n] for n in coded)
        pooled["chain"].extend(chain.read[n] for n in coded)
        for name, run in (("bare", bare), ("fast", quick), ("chain", chain)):
            ms[f"{name}_code"].extend(run.ms[n] for n in coded)
            ms[f"{name}_empty"].extend(run.ms[n] for n in empty)
        out(f"{category:10} {len(coded):6d} {rate_bare:5.1f}% {rate_chain:5.1f}% {rate_chain - rate_bare:+6.1f}")
    pooled_bare = 100.0 * statistics.fmean(pooled["bare"])
    pooled_chain = 100.0 * statistics.fmean(pooled["chain"])
    mean_bare = statistics.fmean(row["bare"] for row in rows.values())
    mean_chain = statistics.fmean(row["chain"] for row in rows.values())
    worst = min(rows, key=lambda c: rows[c]["chain"] - rows[c]["bare"])
    worst_gap = rows[worst]["chain"] - rows[worst]["bare"]
    empty_mean = {name: statistics.fmean(ms[f"{name}_empty"]) for name in ("bare", "fast", "chain")}
    median = {name: statistics.median(ms[f"{name}_code"]) for name in ("bare", "fast", "chain")}
    checks = {
        "pooled": (pooled_chain - pooled_bare, pooled_chain - pooled_bare >= TARGET_GAIN_POINTS - POINTS_SLACK),
        "mean": (mean_chain - mean_bare, mean_chain - mean_bare >= TARGET_GAIN_POINTS - POINTS_SLACK),
        "worst_condition": (worst_gap, worst_gap >= TARGET_WORST_CONDITION_POINTS - POINTS_SLACK),
        "empty_ratio": (empty_mean["chain"] / empty_mean["bare"],
                        empty_mean["chain"] / empty_mean["bare"] <= TARGET_EMPTY_RATIO),
        "median_ratio": (median["chain"] / median["bare"], median["chain"] / median["bare"] <= TARGET_MEDIAN_RATIO),
    }
    gain = pooled_chain - pooled_bare
    out(f"{'pooled':10} {len(pooled['bare']):6d} {pooled_bare:5.1f}% {pooled_chain:5.1f}% {gain:+6.1f}")
    out(f"{'mean':10} {'':6} {mean_bare:5.1f}% {mean_chain:5.1f}% {mean_chain - mean_bare:+6.1f}")
    out(f"  [{_met(checks['pooled'][1]):7}] pooled gain {checks['pooled'][0]:+.1f} points; "
        f"target >= +{TARGET_GAIN_POINTS:.0f}")
    out(f"  [{_met(checks['mean'][1]):7}] mean-of-conditions gain {checks['mean'][0]:+.1f} points; "
        f"target >= +{TARGET_GAIN_POINTS:.0f}")
    out(f"  [{_met(checks['worst_condition'][1]):7}] worst condition {worst} {worst_gap:+.1f} points; "
        f"target >= {TARGET_WORST_CONDITION_POINTS:+.0f}")
    out(f"  [{_met(checks['empty_ratio'][1]):7}] empty frames: chain {empty_mean['chain']:.3f} ms = "
        f"{checks['empty_ratio'][0]:.2f}x bare ({empty_mean['bare']:.3f} ms); target <= {TARGET_EMPTY_RATIO}x "
        f"(the QR-only fast call: {empty_mean['fast']:.3f} ms, "
        f"chain = {empty_mean['chain'] / empty_mean['fast']:.2f}x it)")
    out(f"  [{_met(checks['median_ratio'][1]):7}] frames with a code, median: chain {median['chain']:.3f} ms = "
        f"{checks['median_ratio'][0]:.2f}x bare ({median['bare']:.3f} ms); target <= {TARGET_MEDIAN_RATIO:.0f}x "
        f"(QR-only fast call {median['fast']:.3f} ms, chain = {median['chain'] / median['fast']:.2f}x it)")
    out("")
    return {"conditions": rows, "pooled": {"bare": pooled_bare, "chain": pooled_chain},
            "mean": {"bare": mean_bare, "chain": mean_chain}, "empty_ms": empty_mean, "code_median_ms": median,
            "targets": {name: {"value": value, "met": ok} for name, (value, ok) in checks.items()}}


def bench_sizes(*, repeat: int = 2, out: Callable[[str], None] = print,
                visits: dict[int, int] | None = None) -> dict[str, dict[str, object]]:
    """Every frame size; ``visits`` per condition by frame width (fewer at the larger sizes: a bare
    zxing-cpp call at 2304x1296 takes about 50 ms here)."""
    visits = visits or {640: 5, 1280: 3, 2304: 3}
    out("decode rates per condition and frame size, the gate's chain against bare zxing-cpp")
    return {f"{w}x{h}": size_section(w, h, visits.get(w, 3), repeat, out) for w, h in FRAME_SIZES}

