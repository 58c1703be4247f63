"""``qrgate bench``: how fast each stage is, on frames rendered before any clock starts.

Speed is measured here, never asserted in tests, because shared machines are noisy. Every figure is
printed next to a baseline measured in the same run on the same frames. The naive baseline is what a
first prototype does: convert the full RGB frame to grey, then call ``pyzbar.decode`` with every
symbology enabled.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .clock import SystemClock
from .config import DeviceConfig
from .decision import Decider, payload_key
from .decoding.factory import build_decoder
from .frames.synthetic import SyntheticGate, Visit
from .gate import Gate
from .outbox import Outbox
from .passes.trust import TrustStore
from .passes.verifier import PassVerifier

RESOLUTIONS = ((640, 480), (1280, 720))


@dataclass(frozen=True, slots=True)
class Timing:
    mean_ms: float
    median_ms: float
    decoded: float | None  # share of frames where the expected code was read (None: empty frames)

    @property
    def fps(self) -> float:
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")


def _time_each(function: Callable[[object], object], items: Sequence[object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        for item in items:
            start = time.perf_counter()
            function(item)
            samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def _frames(visits: list[Visit], width: int, height: int, count: int, with_code: bool, seed: int) -> tuple[list[np.ndarray], list[str | None]]:
    """``count`` frames rendered by the synthetic scene, each with (or without) a code in view."""
    frames: list[np.ndarray] = []
    truths: list[str | None] = []
    with SyntheticGate(visits, width, height, realtime=False, seed=seed) as scene:
        scene.start()
        while len(frames) < count:
            try:
                frame = scene.read()
            except EOFError:
                break
            visit = scene.truth(frame.index)
            if (visit is not None) == with_code:
                frames.append(frame.grey.copy())
                truths.append(visits[visit].payload if visit is not None else None)
    return frames, truths


def _naive_baseline() -> Callable[[np.ndarray], list]:
    from pyzbar import pyzbar

    def decode(rgb: np.ndarray) -> list:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return pyzbar.decode(grey)  # every symbology, as a first prototype would

    return decode


def _decode_timing(decode: Callable[[np.ndarray], list], frames: list[np.ndarray], truths: list[str | None],
                   repeat: int, text_of: Callable[[object], str]) -> Timing:
    samples = _time_each(decode, frames, repeat)
    decoded = None
    if truths and truths[0] is not None:
        hits = sum(1 for frame, truth in zip(frames, truths) if any(text_of(code) == truth for code in decode(frame)))
        decoded = hits / len(frames)
    return Timing(statistics.fmean(samples), statistics.median(samples), decoded)


def _sample_passes(now: float, directory: Path) -> tuple[list[str], TrustStore]:
    from .demo import demo_visitors

    visitors = demo_visitors(directory, now)
    return [visitor.payload for visitor in visitors], TrustStore.from_paths([directory])


class _NullFeedback:
    def show(self, outcome: object) -> None:
        pass


def run_bench(*, frames_per_case: int = 60, repeat: int = 3, out: Callable[[str], None] = print) -> dict:
    results: dict = {"decode": {}, "stages": {}, "pipeline": {}}
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-") as tmp:
        payloads, trust = _sample_passes(now, Path(tmp) / "trust")
        visits = [Visit(p, dwell_s=1.0, gap_s=0.8, medium="paper" if i % 3 == 2 else "phone")
                  for i, p in enumerate(payloads)]
        decoders = {
            "zxing": build_decoder("zxing", None),
            "zbar": build_decoder("zbar", None),
            "zxing+zbar": build_decoder("zxing", "zbar"),
        }
        naive = _naive_baseline()
        out(f"qrgate bench: {frames_per_case} frames per case x {repeat} repeats; ms per frame (mean / median), "
            "frames/s, share of code frames read")
        out("")
        header = f"{'frames':22} {'decoder':12} {'mean ms':>8} {'median':>8} {'fps':>8} {'read':>6} {'vs naive':>9}"
        out(header)
        out("-" * len(header))
        for width, height in RESOLUTIONS:
            for with_code in (False, True):
                frames, truths = _frames(visits, width, height, frames_per_case, with_code, seed=11)
                rgb_frames = [cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) for f in frames]
                case = f"{width}x{height} {'code' if with_code else 'empty'}"
                base = _decode_timing(naive, rgb_frames, truths, repeat, lambda s: s.data.decode("utf-8", "replace"))
                rows = {name: _decode_timing(d.decode, frames, truths, repeat, lambda c: c.text) for name, d in decoders.items()}
                rows["naive baseline"] = base
                results["decode"][case] = {
                    name: {"mean_ms": t.mean_ms, "median_ms": t.median_ms, "fps": t.fps, "read": t.decoded}
                    for name, t in rows.items()}
                for name, timing in rows.items():
                    read = "-" if timing.decoded is None else f"{timing.decoded:6.0%}"
                    ratio = base.mean_ms / timing.mean_ms if timing.mean_ms else float("inf")
                    out(f"{case:22} {name:12} {timing.mean_ms:8.3f} {timing.median_ms:8.3f} {timing.fps:8.0f} {read:>6} {ratio:8.1f}x")
        out("")

        verifier = PassVerifier(trust)
        verify_ms = _time_each(lambda text: verifier.verify(text, now), payloads, repeat * 5)
        decider = Decider()
        keys = [payload_key(p) for p in payloads]
        clock = [0.0]

        def decide(key: bytes) -> None:
            clock[0] += 0.033
            decider.observe(key, clock[0])

        decide_ms = _time_each(decide, keys * 20, repeat)
        device = DeviceConfig()
        outbox = Outbox(Path(tmp) / "bench-outbox.sqlite")
        from .wire import CheckinEvent, iso_utc, new_event_id

        def persist(_: object) -> None:
            outbox.append(lambda seq: CheckinEvent(
                event_id=new_event_id(), seq=seq, device_id=device.id, site_id=device.site_id, gate=device.gate,
                direction=device.direction, time=iso_utc(time.time()), clock_synced=True, verdict="accepted",
                reason="accepted", format="qrgate", issuer="VN-DEMO", pass_id="00000000000003e9", subject_id="AAAA"))

        persist_ms = _time_each(persist, range(40), 1)
        outbox.close()
        out(f"{'stage':12} {'mean ms':>8} {'median':>8}   (per presentation, once per code shown)")
        for name, samples in (("verify", verify_ms), ("decide", decide_ms), ("persist", persist_ms)):
            out(f"{name:12} {statistics.fmean(samples):8.3f} {statistics.median(samples):8.3f}")
            results["stages"][name] = {"mean_ms": statistics.fmean(samples), "median_ms": statistics.median(samples)}
        out("   verify: PassVerifier over the demo's passes (HC1 PS256/ES256, QG1 Ed25519/ES256, invalid ones)")
        out("   persist: SQLite outbox append, WAL + synchronous=FULL (an fsync per event; depends on the disk)")
        out("")

        # The whole per-frame path over a scripted stream: decode -> decide -> verify -> persist -> feedback.
        width, height = RESOLUTIONS[0]
        stream: list[np.ndarray] = []
        stamps: list[float] = []
        with SyntheticGate(visits, width, height, realtime=False, seed=5) as scene:
            scene.start()
            while True:
                try:
                    frame = scene.read()
                except EOFError:
                    break
                stream.append(frame.grey.copy())
                stamps.append(frame.captured_at)
        from .frames.base import Frame

        pipeline_outbox = Outbox(Path(tmp) / "pipeline-outbox.sqlite")
        gate = Gate(decoder=decoders["zxing+zbar"], verifier=verifier, decider=Decider(), outbox=pipeline_outbox,
                    show=_NullFeedback().show, device=device, clock=SystemClock())
        frames = [Frame(grey, stamp, index) for index, (grey, stamp) in enumerate(zip(stream, stamps))]
        start = time.perf_counter()
        for frame in frames:
            gate.process(frame)
        elapsed = time.perf_counter() - start
        pipeline_outbox.close()
        fps = len(frames) / elapsed
        results["pipeline"] = {"frames": len(frames), "seconds": elapsed, "fps": fps,
                               "presentations": gate.stats.presentations, "accepted": gate.stats.accepted,
                               "rejected": gate.stats.rejected}
        out(f"whole loop, {width}x{height} synthetic stream of {len(visits)} visitors: {len(frames)} frames in "
            f"{elapsed:.2f} s = {fps:.0f} frames/s; {gate.stats.presentations} events stored, "
            f"{gate.stats.accepted} accepted / {gate.stats.rejected} rejected shown")
    return results
