"""The synthetic gate scene: a scripted camera view of visitors holding up QR codes.

Used by the demo, the tests and the bench. A script is a sequence of visits; each visit is an
empty scene for ``gap_s``, then a hand holding a phone or a printed sheet with the visitor's code
for ``dwell_s``, then empty again. A visit's ``category`` adds one hard situation (moiré, glare,
damage, blur, a moving hand, mixed lighting; see ``scene_effects``) to the clean scene below.
The rendering aims at what a Pi camera at a gate really sees:
codes 2-6 px per module, tilted up to ~25 degrees, drifting and shaking with the hand, sliding
in and out of view, some frames blurred by motion or focus hunting, sensor noise, glare on phone
screens, lower contrast on paper, a textured background with clutter.

Cost: everything expensive happens once. QR matrices are encoded (segno, ~35 ms for an
825-character pass) when the scene is built; a visit's carrier (phone or paper with the code) and
six perspective-warped pose variants are rendered at the visit's first frame (~10-20 ms, once per
visit); the background and two noise fields once per scene. Per frame only: copy the background,
paste one pre-warped patch through its mask, blur that patch on the frames chosen for blur, add
and subtract a shifted window of the noise fields. Measured at 640x480 on the development machine
(2 vCPU AMD EPYC): 0.04 ms for an empty frame, 0.16 ms on average for a frame with a code (blurred
ones ~0.3 ms), ~0.4 ms per frame over a whole script including the per-visit builds.

Deterministic: every random choice derives from ``seed`` and the visit index, and a frame is a
pure function of its index (the realtime thread renders the same frames, it only drops some).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..errors import ConfigError, FrameSourceError
from .base import Frame
from .capture_thread import CaptureFn
from .live import LiveFrameSource
from .scene_assets import Pose, VisitAssets, blur_kernels, build_visit, frame_scale, qr_modules, render_background
from .scene_effects import CATEGORIES, CATEGORY_MEDIUM, Category, flicker_gain

Medium = Literal["phone", "paper"]

_NOISE_MARGIN = 32  # noise fields are this much larger than a frame, read at shifting offsets


@dataclass(frozen=True, slots=True)
class Visit:
    """One visitor: ``gap_s`` of empty scene, then their code in view for ``dwell_s``.

    ``module_px`` is the code's module size in frame pixels (None: drawn from 2.5-4.5 at 640 px
    wide, scaled with wider frames: a phone at about 30 cm); it is reduced if the code would not
    fit, and a ``closeup`` sets its own (the code fills the frame). ``max_tilt_deg`` bounds the
    out-of-plane tilt of the pose variants, ``shake_px`` is the standard deviation of the
    frame-to-frame hand jitter, ``blur_share`` the share of frames blurred by motion or focus.

    ``category`` adds one hard situation to the clean scene (see ``scene_effects``); categories
    that only exist on one medium imply it (``glare`` a phone, ``damage`` paper), and ``medium``
    then defaults to it. The clean scene renders the same frames whatever categories exist.
    """

    payload: str
    dwell_s: float = 1.5
    medium: Medium | None = None  # None: the category's medium, else "phone"
    gap_s: float = 1.0
    module_px: float | None = None
    max_tilt_deg: float = 25.0
    shake_px: float = 1.0
    blur_share: float = 0.15
    category: Category = "clean"

    def __post_init__(self) -> None:
        if self.dwell_s <= 0 or self.gap_s < 0:
            raise ValueError(f"dwell_s must be > 0 and gap_s >= 0, got {self.dwell_s}, {self.gap_s}")
        if self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}, got {self.category!r}")
        implied = CATEGORY_MEDIUM[self.category]
        if self.medium is None:
            object.__setattr__(self, "medium", implied or "phone")  # frozen: set once, here
        elif self.medium not in ("phone", "paper"):
            raise ValueError(f"medium must be 'phone' or 'paper', got {self.medium!r}")
        elif implied is not None and self.medium != implied:
            raise ValueError(f"category {self.category!r} is shown on {implied}, not {self.medium}")
        if self.module_px is not None and not 1.0 <= self.module_px <= 12.0:
            raise ValueError(f"module_px must be within 1-12, got {self.module_px}")
        if not 0.0 <= self.max_tilt_deg <= 60.0 or not 0.0 <= self.blur_share <= 1.0 or self.shake_px < 0:
            raise ValueError("max_tilt_deg must be within 0-60, blur_share within 0-1, shake_px >= 0")


def load_script(path: str | Path) -> list[Visit]:
    """Visits from a JSON file: a list whose items are payload strings or objects of Visit fields,
    e.g. ``["HC1:...", {"payload": "QRG1:...", "medium": "paper", "dwell_s": 2.0}]``.

    Raises ConfigError naming the file and the offending item.
    """
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"synthetic script {path}: {exc}") from exc
    if not isinstance(items, list) or not items:
        raise ConfigError(f"synthetic script {path}: expected a non-empty JSON list of visits")
    fields = {f.name for f in dataclasses.fields(Visit)}
    visits = []
    for n, item in enumerate(items):
        try:
            if isinstance(item, str):
                visits.append(Visit(item))
            elif isinstance(item, dict) and set(item) <= fields:
                visits.append(Visit(**item))
            else:
                raise ValueError(f"expected a payload string or an object with keys from {sorted(fields)}")
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"synthetic script {path}, visit {n}: {exc}") from exc
    return visits


class SyntheticGate(LiveFrameSource):
    """A frame source that renders a scripted gate scene, with ground truth.

    ``realtime=False``: ``read`` renders the next frame at once, never drops one, and stamps it
    with simulated time ``time_origin + index / fps``, so runs are exactly repeatable.
    ``realtime=True``: a background thread renders at ``fps`` against the monotonic clock with
    latest-frame-wins hand-off, so a slow reader sees drops (counted), as with a camera.

    ``read`` raises EOFError after the script ends, unless ``loop``. ``truth(index)`` tells which
    visit's code is in view in frame ``index`` (None for an empty frame).
    """

    name = "synthetic"
    _label = "the synthetic source"

    def __init__(
        self,
        script: Sequence[Visit],
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        *,
        realtime: bool = False,
        seed: int = 0,
        loop: bool = False,
        time_origin: float = 0.0,
    ) -> None:
        if not script:
            raise ValueError("the script needs at least one visit")
        if width < 160 or height < 120 or fps <= 0:
            raise ValueError(f"need at least 160x120 at fps > 0, got {width}x{height} at {fps}")
        super().__init__()
        self.script = tuple(script)
        self.width, self.height, self.fps = width, height, fps
        self.realtime, self.loop, self.time_origin = realtime, loop, time_origin
        self._seed = seed
        for visit in self.script:
            qr_modules(visit.payload)  # encode now: an impossible payload fails here, not mid-run

        # Timeline: each visit owns its gap frames then its dwell frames; its code is in view
        # during the dwell. Its assets are built at its first frame, so in the gap when it has one.
        code_starts: list[int] = []
        owner: list[int] = []
        truth: list[int] = []  # per frame, the visit whose code is in view, or -1
        for k, visit in enumerate(self.script):
            gap = round(visit.gap_s * fps)
            dwell = max(1, round(visit.dwell_s * fps))
            code_starts.append(len(owner) + gap)
            owner.extend([k] * (gap + dwell))
            truth.extend([-1] * gap + [k] * dwell)
        self.frame_count = len(owner)  # frames in one pass of the script
        self._code_start = np.array(code_starts)
        self._owner = np.array(owner, dtype=np.int32)
        self._truth = np.array(truth, dtype=np.int32)

        scene_rng = np.random.default_rng([seed, 0])
        self._background = render_background(scene_rng, width, height)
        sigma = scene_rng.uniform(2.0, 4.0)
        noise = scene_rng.normal(0.0, sigma, (height + _NOISE_MARGIN, width + _NOISE_MARGIN))
        self._noise_up = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_down = np.clip(-noise, 0, 255).astype(np.uint8)
        self._kernels = blur_kernels(frame_scale(width))
        self._assets_for: int | None = None
        self._assets: VisitAssets | None = None

        self._frame = np.empty((height, width), np.uint8)
        self._next_index = 0

    # -- ground truth ------------------------------------------------------------------------

    def truth(self, index: int) -> int | None:
        """Index into ``script`` of the visit whose code is in view in frame ``index``, else None."""
        if index < 0 or (index >= self.frame_count and not self.loop):
            raise IndexError(f"frame {index} is outside the script's {self.frame_count} frames")
        k = int(self._truth[index % self.frame_count])
        return None if k < 0 else k

    def timestamp(self, index: int) -> float:
        """Simulated capture time of frame ``index`` (what non-realtime frames carry)."""
        return self.time_origin + index / self.fps

    # -- rendering ---------------------------------------------------------------------------

    def render(self, index: int, out: np.ndarray) -> None:
        """Draw frame ``index`` into ``out`` (height x width uint8).

        Not thread-safe (it caches the current visit's assets): in realtime mode the capture
        thread is its only caller.
        """
        i = index % self.frame_count
        np.copyto(out, self._background)
        visit = int(self._owner[i])
        assets = self._visit_assets(visit)
        j = i - int(self._code_start[visit])
        if j >= 0:
            pose = assets.poses[assets.pose[j]]
            box = self._paste(out, pose, assets.centre_x[j], assets.centre_y[j])
            if box is not None and assets.flicker is not None:
                # The tube above the gate lights the card held up under it, not the daylit wall behind.
                f = assets.flicker
                x0, y0, x1, y1 = box
                gain = flicker_gain(self.height, f.period_px, f.phase + j * f.step, f.depth)[y0:y1, None]
                roi = out[y0:y1, x0:x1]
                np.multiply(roi, gain, out=roi, casting="unsafe")
            if box is not None and assets.blur[j]:
                self._blur(out, box, int(assets.blur[j]))
        # Sensor noise: shifting windows over two fixed fields, so no random numbers per frame.
        dy, dx = (i * 7919) % _NOISE_MARGIN, (i * 104729) % _NOISE_MARGIN
        cv2.add(out, self._noise_up[dy : dy + self.height, dx : dx + self.width], dst=out)
        dy, dx = (i * 15485863) % _NOISE_MARGIN, (i * 32452843) % _NOISE_MARGIN
        cv2.subtract(out, self._noise_down[dy : dy + self.height, dx : dx + self.width], dst=out)

    def _paste(self, out: np.ndarray, pose: Pose, cx: int, cy: int) -> tuple[int, int, int, int] | None:
        ph, pw = pose.patch.shape
        x0, y0 = int(cx - pose.anchor[0]), int(cy - pose.anchor[1])
        fx0, fy0 = max(x0, 0), max(y0, 0)
        fx1, fy1 = min(x0 + pw, self.width), min(y0 + ph, self.height)
        if fx1 <= fx0 or fy1 <= fy0:
            return None
        src = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
        cv2.copyTo(pose.patch[src], pose.mask[src], out[fy0:fy1, fx0:fx1])
        return fx0, fy0, fx1, fy1

    def _blur(self, out: np.ndarray, box: tuple[int, int, int, int], kernel_id: int) -> None:
        kernel = self._kernels[kernel_id]
        r = kernel.shape[0] // 2 + 1
        x0, y0, x1, y1 = box
        roi = out[max(y0 - r, 0) : min(y1 + r, self.height), max(x0 - r, 0) : min(x1 + r, self.width)]
        cv2.filter2D(roi, -1, kernel, dst=roi, borderType=cv2.BORDER_REPLICATE)

    def _visit_assets(self, visit: int) -> VisitAssets:
        if self._assets_for != visit:
            self._assets = build_visit(
                self.script[visit],
                np.random.default_rng([self._seed, 1, visit]),
                np.random.default_rng([self._seed, 2, visit]),
                self.width,
                self.height,
                self.fps,
            )
            self._assets_for = visit
        assert self._assets is not None
        return self._assets

    # -- frame source ------------------------------------------------------------------------

    def _open(self) -> None:
        """Realtime: start the rendering thread, at the frame after the last one rendered before a stop()."""
        if self.realtime:
            self._start_capture(self.height, self.width, self._paced_capture(time.monotonic(), self._resume_index))

    def _paced_capture(self, start: float, first_index: int) -> CaptureFn:
        def capture(grey: np.ndarray, index: int) -> float | None:
            if index >= self.frame_count and not self.loop:
                raise EOFError
            due = start + (index - first_index) / self.fps
            assert self._thread is not None
            if self._thread.stopping.wait(max(0.0, due - time.monotonic())):
                return None
            self.render(index, grey)
            return due

        return capture

    @property
    def live(self) -> bool:
        """Realtime frames carry their monotonic capture time; the others carry simulated time."""
        return self.realtime

    def read(self, timeout: float = 1.0) -> Frame | None:
        if not self._running:
            raise FrameSourceError(f"{self._label} is {self._state()}")
        if self.realtime:
            return super().read(timeout)
        index = self._next_index
        if index >= self.frame_count and not self.loop:
            raise EOFError(f"the script's {self.frame_count} frames are done")
        self.render(index, self._frame)
        self._next_index = index + 1
        return Frame(self._frame, self.timestamp(index), index)
