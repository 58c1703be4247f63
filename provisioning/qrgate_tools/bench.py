"""``qrgate bench``: how fast each stage is, on frames rendered before any clock starts.

Speed is measured here, never asserted in tests, because shared machines are noisy. Every figure is
printed next to a baseline measured in the same run on the same frames, and each of the issue's
targets is printed with the measured ratio and whether it is met. The naive baseline is what a
first prototype does: convert the full RGB frame to grey, then call ``pyzbar.decode`` with every
symbology enabled.

Sections, in order: decoders on empty and code frames at two resolutions; decoders per scene
category (decode rate, time) and the targets (both in bench_categories.py); the per-presentation
stages; the whole loop (throughput, frame-to-LED latency, CPU time, memory); decoding on several
threads; projections for a Pi.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from qrgate.clock import SystemClock
from qrgate.config import DecoderConfig, DeviceConfig
from qrgate.decision import Decider, payload_key
from qrgate.decoding.base import DecodedCode, Decoder
from qrgate.decoding.factory import build_decoder, build_pipeline
from qrgate.decoding.opencv import OpenCvDecoder
from qrgate.decoding.parallel import ParallelDecoder
from qrgate.decoding.zbar import ZbarDecoder
from qrgate.decoding.zxing import ZxingDecoder
from qrgate.frames.base import Frame
from qrgate.frames.scene_effects import CATEGORIES
from qrgate.frames.synthetic import SyntheticGate, Visit
from qrgate.gate import Gate
from qrgate.outbox import Outbox
from qrgate.passes.trust import TrustStore
from qrgate.passes.verifier import PassVerifier

from .bench_categories import category_section, targets_section
from .bench_common import met, naive_baseline, percentile, time_each
from .bench_sizes import category_payloads, stream

RESOLUTIONS = ((640, 480), (1280, 720))
# How much slower a Raspberry Pi is than the machine the bench runs on, per core (the issue's
# estimate for this development machine: a Pi 4 4-9x, a Pi 5 about 3x).
PI_SLOWDOWN = {"Pi 4": (4.0, 9.0), "Pi 5": (3.0, 3.0)}
TARGET_LOOP_FPS = 300.0

C = TypeVar("C")  # what a decoder returns per code read


@dataclass(frozen=True, slots=True)
class Timing:
    mean_ms: float
    median_ms: float
    decoded: float | None  # share of frames where the expected code was read (None: empty frames)

    @property
    def fps(self) -> float:
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")


def _frames(visits: list[Visit], width: int, height: int, count: int, with_code: bool,
            seed: int) -> tuple[list[np.ndarray], list[str | None]]:
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
            assert frame is not None  # a scene that is not realtime renders the next frame on every read
            visit = scene.truth(frame.index)
            if (visit is not None) == with_code:
                frames.append(frame.grey.copy())
                truths.append(visits[visit].payload if visit is not None else None)
    return frames, truths


def _decode_timing(decode: Callable[[np.ndarray], Sequence[C]], frames: list[np.ndarray], truths: list[str | None],
                   repeat: int, text_of: Callable[[C], str]) -> Timing:
    samples = time_each(decode, frames, repeat)
    decoded = None
    if truths and truths[0] is not None:
        hits = sum(1 for frame, truth in zip(frames, truths, strict=True)
                   if any(text_of(code) == truth for code in decode(frame)))
        decoded = hits / len(frames)
    return Timing(statistics.fmean(samples), statistics.median(samples), decoded)


def _sample_passes(now: float, directory: Path) -> tuple[list[str], TrustStore]:
    from .demo import demo_visitors

    visitors = demo_visitors(directory, now)
    return [visitor.payload for visitor in visitors], TrustStore.from_paths([directory])


class _NullFeedback:
    def show(self, outcome: object) -> None:
        pass


class _StreamClock(SystemClock):
    """Monotonic time that reads each frame's simulated capture time at the moment the frame is
    handed to the gate, then runs at real speed: the decider sees the scene's own time (a 0.8 s
    gap stays 0.8 s however fast frames are processed), and the gate's capture-to-feedback
    latency is the real time the frame took through decode, verify, persist and feedback."""

    def __init__(self) -> None:
        super().__init__(assume_synchronised=True)
        self._origin = 0.0
        self._started = time.perf_counter()

    def captured(self, at: float) -> None:
        self._origin, self._started = at, time.perf_counter()

    def monotonic(self) -> float:
        return self._origin + (time.perf_counter() - self._started)


# -- threads -------------------------------------------------------------------------------------


def _threads_section(frames: list[np.ndarray], out: Callable[[str], None]) -> dict[str, object]:
    """zxing-cpp on 1 and 2 threads (does it release the GIL?), then the parallel decoder's
    throughput and latency at 1..N workers on the hard stream."""
    results: dict[str, object] = {}
    zxing = ZxingDecoder()

    def work(count: int) -> None:
        for n in range(count):
            zxing.decode(frames[n % len(frames)])

    count = 400
    start = time.perf_counter()
    work(count)
    one = time.perf_counter() - start
    threads = [threading.Thread(target=work, args=(count,)) for _ in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    two = time.perf_counter() - start
    speedup = 2 * one / two
    results["zxing_two_thread_speedup"] = speedup
    out(f"zxing-cpp on 2 threads: {2 * count} frames in {two:.2f} s vs {count} in {one:.2f} s on 1: "
        f"{speedup:.2f}x the frames per second (2.0 = releases the GIL completely)")

    out(f"{'workers':>7} {'max fps':>8} {'p50 ms':>7} {'p99 ms':>7} {'dropped':>8}   (hard stream, every category; "
        "latency = submit to result, fed at 1.5x one worker's rate)")
    one_worker_fps = 0.0
    for workers in range(1, 4):
        # Throughput: every frame decoded (wait=True), presence gate off so each frame costs a decode.
        ungated = DecoderConfig(presence_gate=False)
        with ParallelDecoder(build_pipeline(ungated), lambda f, c: None, workers=workers) as pool:
            start = time.perf_counter()
            for index, grey in enumerate(frames):
                pool.submit(Frame(grey, 0.0, index), wait=True)
            pool.wait_idle()
            fps = len(frames) / (time.perf_counter() - start)
        one_worker_fps = one_worker_fps or fps
        # Latency at a camera rate above what one worker keeps up with: latest frame wins.
        latencies: list[float] = []
        period = 1.0 / (1.5 * one_worker_fps)
        submitted: dict[int, float] = {}

        def delivered(frame: Frame, codes: list[DecodedCode]) -> None:
            # B023 is safe here: the pool below is closed within this iteration, before the loop rebinds them
            latencies.append(time.perf_counter() - submitted[frame.index])  # noqa: B023

        with ParallelDecoder(build_pipeline(ungated), delivered, workers=workers) as pool:
            due = time.perf_counter()
            for index, grey in enumerate(frames):
                due += period
                # sleep(), not a busy wait: a spinning Python loop would hold the GIL the
                # workers need between their C calls, and measure that instead.
                time.sleep(max(0.0, due - time.perf_counter()))
                submitted[index] = time.perf_counter()
                pool.submit(Frame(grey, 0.0, index))
            pool.wait_idle()
            dropped = pool.frames_dropped
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        results[f"workers_{workers}"] = {"fps": fps, "latency_p50_ms": p50, "latency_p99_ms": p99, "dropped": dropped}
        out(f"{workers:7d} {fps:8.0f} {p50:7.2f} {p99:7.2f} {dropped:8d}")
    out("")
    return results


# -- the bench -----------------------------------------------------------------------------------


# Optional sections beside decoding, stages and the whole loop: the chain at three frame sizes
# (bench_sizes.py), on real photos (bench_photos.py), the revocation index, the uplink; and the province at scale
# (bench_province.py: PostgreSQL and ~5 min), which only --only runs.
SECTIONS = ("sizes", "photos", "revocation", "uplink", "province")


def run_bench(*, frames_per_case: int = 60, repeat: int = 3, out: Callable[[str], None] = print,
              visits_per_category: int = 5, sections: Sequence[str] = SECTIONS) -> dict[str, object]:
    decode_results: dict[str, dict[str, dict[str, float | None]]] = {}  # case -> decoder -> figure
    stages: dict[str, dict[str, float]] = {}
    loops: dict[str, dict[str, float]] = {}  # "easy" and "hard" stream -> figure
    pipeline: dict[str, object] = {}  # the loops, and the easy one's figures at the top (see below)
    results: dict[str, object] = {"decode": decode_results, "stages": stages, "pipeline": pipeline}
    now = time.time()
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-") as tmp:
        payloads, trust = _sample_passes(now, Path(tmp) / "trust")
        visits = [Visit(p, dwell_s=1.0, gap_s=0.8, medium="paper" if i % 3 == 2 else "phone")
                  for i, p in enumerate(payloads)]
        decoders: dict[str, Decoder] = {
            "zxing": ZxingDecoder(),
            "zbar": ZbarDecoder(),
            "opencv": OpenCvDecoder(),
            "cascade": build_decoder(),
        }
        naive = naive_baseline()
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
                rows = {name: _decode_timing(d.decode, frames, truths, repeat, lambda c: c.text)
                        for name, d in decoders.items()}
                rows["naive baseline"] = base
                decode_results[case] = {
                    name: {"mean_ms": t.mean_ms, "median_ms": t.median_ms, "fps": t.fps, "read": t.decoded}
                    for name, t in rows.items()}
                for name, timing in rows.items():
                    read = "-" if timing.decoded is None else f"{timing.decoded:6.0%}"
                    ratio = base.mean_ms / timing.mean_ms if timing.mean_ms else float("inf")
                    out(f"{case:22} {name:12} {timing.mean_ms:8.3f} {timing.median_ms:8.3f} {timing.fps:8.0f} "
                        f"{read:>6} {ratio:8.1f}x")
        out("   cascade: zxing-cpp, and the repair ladder only on a QR it located but could not read")
        out("")

        categories = category_section(category_payloads(), visits_per_category, repeat, out)
        results["categories"] = categories
        results["targets"] = targets_section(categories, out)
        results.update(run_sections([name for name in ("sizes", "photos") if name in sections], repeat, out))

        verifier = PassVerifier(trust)
        verify_ms = time_each(lambda text: verifier.verify(text, now), payloads, repeat * 5)
        decider = Decider()
        keys = [payload_key(p) for p in payloads]
        decide_time = [0.0]

        def decide(key: bytes) -> None:
            decide_time[0] += 0.033
            decider.observe(key, decide_time[0])

        decide_ms = time_each(decide, keys * 20, repeat)
        device = DeviceConfig()
        outbox = Outbox(Path(tmp) / "bench-outbox.sqlite")
        from qrgate.wire import CheckinEvent, iso_utc, new_event_id

        def persist(_: object) -> None:
            outbox.append(lambda seq: CheckinEvent(
                event_id=new_event_id(), seq=seq, device_id=device.id, site_id=device.site_id, gate=device.gate,
                direction="in", time=iso_utc(time.time()), clock_synced=True, verdict="accepted",
                reason="accepted", format="qrgate", issuer="VN-DEMO", pass_id="00000000000003e9", subject_id="AAAA"))

        persist_ms = time_each(persist, range(40), 1)
        outbox.close()
        out(f"{'stage':12} {'mean ms':>8} {'median':>8}   (per presentation, once per code shown)")
        for name, samples in (("verify", verify_ms), ("decide", decide_ms), ("persist", persist_ms)):
            out(f"{name:12} {statistics.fmean(samples):8.3f} {statistics.median(samples):8.3f}")
            stages[name] = {"mean_ms": statistics.fmean(samples), "median_ms": statistics.median(samples)}
        out("   verify: PassVerifier over the demo's passes (HC1 PS256/ES256, QG1 Ed25519/ES256, invalid ones)")
        out("   persist: SQLite outbox append, WAL + synchronous=FULL (an fsync per event; depends on the disk)")
        out("")
        results.update(run_sections([name for name in ("revocation", "uplink") if name in sections], repeat, out))
        out("")

        # The whole per-frame path over a scripted stream: decode -> decide -> verify -> persist -> feedback.
        width, height = RESOLUTIONS[0]
        hard = [Visit(payloads[k % len(payloads)], dwell_s=1.0, gap_s=0.8, category=category)
                for k, category in enumerate(CATEGORIES)]
        for label, script, seed in (("easy", visits, 5), ("hard", hard, 6)):
            rendered, _ = stream(script, width, height, seed)
            loop_frames = [Frame(grey, index / 30.0, index) for index, grey in enumerate(rendered)]
            pipeline_outbox = Outbox(Path(tmp) / f"pipeline-{label}.sqlite")
            clock = _StreamClock()
            gate = Gate(decoder=build_pipeline(), verifier=verifier, decider=Decider(), outbox=pipeline_outbox,
                        show=_NullFeedback().show, device=device, clock=clock, measure_latency=True)
            cpu = time.process_time()
            start = time.perf_counter()
            for frame in loop_frames:
                clock.captured(frame.captured_at)
                gate.process(frame)
            elapsed = time.perf_counter() - start
            cpu_ms = (time.process_time() - cpu) * 1000.0 / len(loop_frames)
            pipeline_outbox.close()
            fps = len(loop_frames) / elapsed
            latencies = list(gate.stats.latencies_s)
            p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
            pipeline[label] = loops[label] = {
                "frames": len(loop_frames), "seconds": elapsed, "fps": fps, "cpu_ms_per_frame": cpu_ms,
                "presentations": gate.stats.presentations, "accepted": gate.stats.accepted,
                "rejected": gate.stats.rejected, "latency_p50_ms": p50, "latency_p99_ms": p99}
            out(f"whole loop, {width}x{height} {label} synthetic stream of {len(script)} visitors: "
                f"{len(loop_frames)} frames in {elapsed:.2f} s = {fps:.0f} frames/s "
                f"[{met(fps >= TARGET_LOOP_FPS)}: >= {TARGET_LOOP_FPS:.0f}]; "
                f"CPU {cpu_ms:.3f} ms/frame; {gate.stats.presentations} events stored, "
                f"{gate.stats.accepted} accepted / {gate.stats.rejected} rejected shown")
            out(f"   frame-to-LED latency per presentation: p50 {p50:.2f} ms, p99 {p99:.2f} ms over "
                f"{len(latencies)} presentations (the frame handed over to feedback shown; a live camera "
                "adds its exposure and the wait in the frame slot)")
        pipeline.update(loops["easy"])  # the keys earlier versions printed
        out("")

        results["threads"] = _threads_section(stream(hard, width, height, 6)[0], out)

        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["resources"] = {"cpu_s": time.process_time() - cpu_start, "peak_rss_mib": peak_mib}
        out(f"bench process: CPU {time.process_time() - cpu_start:.1f} s, peak RSS {peak_mib:.0f} MiB "
            "(frames for every section held in memory at once; the daemon holds a handful)")
        out("")
        results["projections"] = _projection_section(categories["totals"], loops["hard"], out)
    return results


def _projection_section(totals: dict[str, dict[str, float]], loop: dict[str, float],
                        out: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """Per-frame figures scaled by how much slower a Pi's core is (PI_SLOWDOWN): ``totals`` of the
    scene categories, ``loop`` the whole loop on the hard stream."""
    out("projected for a Raspberry Pi (this machine's figures x the slowdown; one core unless said):")
    projections: dict[str, dict[str, list[float]]] = {}
    for board, (low, high) in PI_SLOWDOWN.items():
        def span(v: float, low: float = low, high: float = high) -> str:
            return f"{v * low:.2f}" if low == high else f"{v * low:.2f}-{v * high:.2f}"

        fps_span = f"{loop['fps'] / low:.0f}" if low == high else f"{loop['fps'] / high:.0f}-{loop['fps'] / low:.0f}"
        out(f"  {board} ({low:g}x{'' if low == high else f'-{high:g}x'}): empty frame "
            f"{span(totals['pipeline']['empty_mean_ms'])} ms "
            f"(zxing bare {span(totals['zxing']['empty_mean_ms'])}), code frame median "
            f"{span(totals['pipeline']['code_median_ms'])} ms, "
            f"mean {span(totals['pipeline']['code_mean_ms'])} ms; hard-stream loop {fps_span} frames/s, "
            f"CPU {span(loop['cpu_ms_per_frame'])} ms/frame")
        projections[board] = {"slowdown": [low, high]}
    return projections


def run_sections(names: Sequence[str], repeat: int, out: Callable[[str], None]) -> dict[str, object]:
    """The optional sections ``names`` (of SECTIONS), each imported only when it runs."""
    results: dict[str, object] = {}
    for name in names:
        out("")
        if name == "sizes":
            from .bench_sizes import bench_sizes

            results["sizes"] = bench_sizes(repeat=min(repeat, 2), out=out)
        elif name == "photos":
            from .bench_photos import bench_photos

            results["photos"] = bench_photos(out=out)
        elif name == "revocation":
            from .revocation_bench import bench_revocation

            results["revocation"] = bench_revocation(out=out)
        elif name == "uplink":
            from .bench_uplink import bench_uplink

            results["uplink"] = bench_uplink(out=out)
        elif name == "province":
            from .bench_province import bench_province

            results["province"] = bench_province(out=out)
        else:
            raise ValueError(f"unknown bench section {name!r}; valid: {', '.join(SECTIONS)}")
    return results
