"""The synthetic gate scene: a scripted camera view of visitors holding up QR codes.

Used by the demo, the tests and the bench. A script is a sequence of visits; each visit is an
empty scene for ``gap_s``, then a hand holding a phone or a printed sheet with the visitor's code
for ``dwell_s``, then empty again. A visit's ``category`` adds one hard situation (moiré, glare,
damage, blur, a moving hand, mixed lighting; see ``scene_effects``) to the clean scene below. The rendering aims at what a Pi camera at a gate really sees:
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
import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import segno

from ..errors import ConfigError, FrameSourceError
from . import scene_effects as effects
from .base import Frame
from .capture_thread import CaptureFn
from .live import LiveFrameSource
from .scene_effects import CATEGORIES, CATEGORY_MEDIUM, DEFOCUS_SIGMAS, Category

Medium = Literal["phone", "paper"]

_QUIET_ZONE = 4  # modules of light margin around a QR symbol, as the standard requires
_POSES_PER_VISIT = 6
_APPROACH_S = 0.2  # the hand moving the code into view ...
_LEAVE_S = 0.15  # ... and out of it, within the dwell time
_NOISE_MARGIN = 32  # noise fields are this much larger than a frame, read at shifting offsets


@dataclass(frozen=True, slots=True)
class Visit:
    """One visitor: ``gap_s`` of empty scene, then their code in view for ``dwell_s``.

    ``module_px`` is the code's module size in frame pixels (None: drawn from 2.5-4.5, phone at
    about 30 cm); it is reduced if the code would not fit. ``max_tilt_deg`` bounds the
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


@functools.lru_cache(maxsize=64)
def _qr_modules(payload: str) -> np.ndarray:
    """The payload's QR symbol with its quiet zone: 1 = dark module. segno picks version and
    mask, and raises DataOverflowError for a payload no QR can hold."""
    qr = segno.make_qr(payload)
    dark = np.array(qr.matrix, dtype=np.uint8)
    return np.pad(dark, _QUIET_ZONE)


@dataclass(slots=True)
class _Pose:
    patch: np.ndarray  # grey carrier warped into this pose
    mask: np.ndarray  # 255 where the carrier covers the patch
    anchor: tuple[float, float]  # where the code's centre lands in the patch


@dataclass(slots=True)
class _VisitAssets:
    poses: list[_Pose]
    centre_x: np.ndarray  # per dwell frame: where the code's centre is in the frame
    centre_y: np.ndarray
    pose: np.ndarray  # per dwell frame: which pose variant
    blur: np.ndarray  # per dwell frame: 0 none, else index into the scene's blur kernels


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
            _qr_modules(visit.payload)  # encode now: an impossible payload fails here, not mid-run

        # Timeline: each visit owns its gap frames then its dwell frames; its code is in view
        # during the dwell. Its assets are built at its first frame, so in the gap when it has one.
        code_starts, owner, truth = [], [], []
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
        self._background = _render_background(scene_rng, width, height)
        sigma = scene_rng.uniform(2.0, 4.0)
        noise = scene_rng.normal(0.0, sigma, (height + _NOISE_MARGIN, width + _NOISE_MARGIN))
        self._noise_up = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_down = np.clip(-noise, 0, 255).astype(np.uint8)
        self._kernels = _blur_kernels()
        self._assets_for: int | None = None
        self._assets: _VisitAssets | None = None

        self._frame = np.empty((height, width), np.uint8)
        self._next_index = 0
        self._started = False

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
            if box is not None and assets.blur[j]:
                self._blur(out, box, int(assets.blur[j]))
        # Sensor noise: shifting windows over two fixed fields, so no random numbers per frame.
        dy, dx = (i * 7919) % _NOISE_MARGIN, (i * 104729) % _NOISE_MARGIN
        cv2.add(out, self._noise_up[dy : dy + self.height, dx : dx + self.width], dst=out)
        dy, dx = (i * 15485863) % _NOISE_MARGIN, (i * 32452843) % _NOISE_MARGIN
        cv2.subtract(out, self._noise_down[dy : dy + self.height, dx : dx + self.width], dst=out)

    def _paste(self, out: np.ndarray, pose: _Pose, cx: int, cy: int) -> tuple[int, int, int, int] | None:
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

    def _visit_assets(self, visit: int) -> _VisitAssets:
        if self._assets_for != visit:
            self._assets = _build_visit(
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

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise FrameSourceError(f"{self._label} is closed")
            if self._started:
                return
            self._started = True
            if self.realtime:
                self._start_capture(self.height, self.width, self._paced_capture(time.monotonic()))

    def _paced_capture(self, start: float) -> CaptureFn:
        def capture(grey: np.ndarray, index: int) -> float | None:
            if index >= self.frame_count and not self.loop:
                raise EOFError
            due = start + index / self.fps
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
        if not self._started or self._closed:
            raise FrameSourceError(f"{self._label} is {'closed' if self._closed else 'not started'}")
        if self.realtime:
            return super().read(timeout)
        index = self._next_index
        if index >= self.frame_count and not self.loop:
            raise EOFError(f"the script's {self.frame_count} frames are done")
        self.render(index, self._frame)
        self._next_index = index + 1
        return Frame(self._frame, self.timestamp(index), index)


# -- scene assets (built once per scene or per visit) ------------------------------------------


def _render_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A wall with a lighting gradient, low-frequency texture and clutter (panels, text, stripes)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(width, height)
    base = rng.uniform(95, 150) + rng.uniform(20, 45) * ramp
    coarse = rng.normal(0, 12, (height // 24 + 2, width // 24 + 2)).astype(np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    wall = np.clip(base + texture, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(3, 7)):  # door frames, posters, a counter
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(30, width // 2)), y0 + int(rng.integers(30, height // 2))
        cv2.rectangle(wall, (x0, y0), (x1, y1), int(rng.integers(30, 230)), -1 if rng.random() < 0.6 else 3)
    for _ in range(rng.integers(2, 5)):  # signage: text has QR-like edge density
        org = (int(rng.integers(0, width - 100)), int(rng.integers(20, height)))
        words = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(4, 12))))
        cv2.putText(wall, words, org, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.4, 1.2), int(rng.integers(0, 80)), 2)
    x0, y0 = int(rng.integers(0, width - 80)), int(rng.integers(0, height - 60))  # a striped jacket, a grille
    for k in range(0, 80, 6):
        cv2.line(wall, (x0 + k, y0), (x0 + k + 10, y0 + 60), 40, 2)
    return cv2.GaussianBlur(wall, (0, 0), 0.8)


_MOTION_LENGTHS = (3, 5, 7, 9, 13, 17)
_DEFOCUS_FIRST = 1 + 4 * len(_MOTION_LENGTHS)
_STRONG_DEFOCUS_FIRST = _DEFOCUS_FIRST + 3
# Share of a frame period the shutter is open: at 30 fps with the default 16.7 ms exposure cap a
# moving code smears over half the distance it travels between frames.
_EXPOSURE_SHARE = 0.5


def _blur_kernels() -> list[np.ndarray]:
    """Index 0 is unused (no blur); then motion streaks of several lengths and angles, then defocus
    (the clean scene's mild ones, then the ``blur`` category's stronger ones)."""
    kernels: list[np.ndarray] = [np.ones((1, 1), np.float32)]
    for length in _MOTION_LENGTHS:
        for angle in (0, 45, 90, 135):
            k = np.zeros((length, length), np.float32)
            c = length // 2
            dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            cv2.line(k, (round(c - dx * c), round(c - dy * c)), (round(c + dx * c), round(c + dy * c)), 1.0, 1)
            kernels.append(k / k.sum())
    for sigma in (0.8, 1.1, 1.5):
        g = cv2.getGaussianKernel(7, sigma)
        kernels.append((g @ g.T).astype(np.float32))
    for sigma in DEFOCUS_SIGMAS:
        g = cv2.getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma)
        kernels.append((g @ g.T).astype(np.float32))
    return kernels


def _motion_kernel(length_px: float, angle_deg: float) -> int:
    """Index of the motion streak kernel nearest to ``length_px`` at ``angle_deg``."""
    li = min(range(len(_MOTION_LENGTHS)), key=lambda n: abs(_MOTION_LENGTHS[n] - length_px))
    ai = round((angle_deg % 180) / 45) % 4
    return 1 + li * 4 + ai


def _carrier(
    visit: Visit, modules: np.ndarray, module_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float], float, tuple[float, float]]:
    """The phone or sheet with the code on it, at frame scale; returns it, the code's centre in
    it, the code's side in pixels, and its light and dark grey levels."""
    side = round(modules.shape[0] * module_px)
    if visit.medium == "phone":
        light, dark = rng.uniform(200, 240), rng.uniform(35, 70)  # a screen's black glows and reflects
        w, h = round(side * 1.25), round(side * 1.9)
        surround = rng.uniform(15, 35)  # bezel
    else:
        light, dark = rng.uniform(165, 215), rng.uniform(25, 55)  # matte paper under room light
        w, h = round(side * 1.5), round(side * 1.9)
        surround = light
    # Draw the code large and area-average it down, as a sensor integrates light over a pixel.
    big = np.where(np.kron(modules, np.ones((8, 8), np.uint8)) > 0, dark, light).astype(np.uint8)
    code = cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA)
    carrier = np.full((h, w), light, np.uint8)
    if visit.medium == "phone":
        bezel = max(3, round(w * 0.05))
        carrier[:, :bezel] = carrier[:, -bezel:] = surround
        carrier[: 3 * bezel, :] = carrier[-3 * bezel :, :] = surround
    cx, cy = w // 2, round(h * 0.42)
    x0, y0 = cx - side // 2, cy - side // 2
    carrier[y0 : y0 + side, x0 : x0 + side] = code
    for row in range(2):  # lines of text above and below the code, as tickets and apps show
        for y in (y0 - round(side * (0.12 + 0.08 * row)), y0 + side + round(side * (0.1 + 0.08 * row))):
            if 0 <= y < h - 4:
                length = round(side * rng.uniform(0.4, 0.9))
                cv2.line(carrier, (cx - length // 2, y), (cx + length // 2, y), int(dark), max(2, round(module_px)))
    if visit.medium == "paper":
        across, down = rng.uniform(-0.12, 0.0), rng.uniform(-0.1, 0.05)  # light falls off across the sheet
        shade = 1.0 + np.add.outer(down * np.arange(h) / h, across * np.arange(w) / w)
        carrier = np.clip(carrier * shade, 0, 255).astype(np.uint8)
    return carrier, (x0 + side / 2, y0 + side / 2), float(side), (light, dark)


def _add_glare(
    carrier: np.ndarray, code_centre: tuple[float, float], side: float, rng: np.random.Generator
) -> np.ndarray:
    """A soft specular reflection on a phone screen, washing part of the code out."""
    h, w = carrier.shape
    gx = code_centre[0] + rng.uniform(-0.6, 0.6) * side
    gy = code_centre[1] + rng.uniform(-0.6, 0.6) * side
    radius = rng.uniform(0.12, 0.3) * side
    strength = rng.uniform(0.3, 0.65)
    glared = carrier.copy()
    x0, x1 = max(0, int(gx - 3 * radius)), min(w, int(gx + 3 * radius) + 1)
    y0, y1 = max(0, int(gy - 3 * radius)), min(h, int(gy + 3 * radius) + 1)
    if x1 > x0 and y1 > y0:  # a Gaussian is separable: an outer product over its 3-sigma box
        wx = np.exp(-((np.arange(x0, x1) - gx) ** 2) / (2 * radius**2))
        wy = np.exp(-((np.arange(y0, y1) - gy) ** 2) / (2 * radius**2))
        roi = glared[y0:y1, x0:x1]
        roi[:] = roi + strength * np.outer(wy, wx) * (255.0 - roi)
    return glared


def _pose(
    carrier: np.ndarray,
    code_centre: tuple[float, float],
    max_tilt_deg: float,
    focal_px: float,
    rng: np.random.Generator,
) -> _Pose:
    """Warp the carrier as a pinhole camera sees it after rotating the carrier in 3-D."""
    h, w = carrier.shape
    tilt = math.radians(rng.uniform(min(3.0, max_tilt_deg), max_tilt_deg))
    axis = rng.uniform(0, 2 * math.pi)  # direction of the tilt axis in the carrier plane
    roll = math.radians(rng.uniform(-20, 20))
    rotation, _ = cv2.Rodrigues(np.array([math.cos(axis) * tilt, math.sin(axis) * tilt, roll]))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h], list(code_centre)], np.float64)
    plane = np.column_stack([corners - [w / 2, h / 2], np.zeros(5)])
    cam = plane @ rotation.T + [0.0, 0.0, focal_px]  # centre at distance f: unit scale there
    projected = focal_px * cam[:, :2] / cam[:, 2:3]
    origin = projected[:4].min(axis=0)
    projected -= origin
    size = np.ceil(projected[:4].max(axis=0)).astype(int) + 1
    homography = cv2.getPerspectiveTransform(corners[:4].astype(np.float32), projected[:4].astype(np.float32))
    # Replicated borders keep the carrier's edge from blending with black where the mask is set.
    patch = cv2.warpPerspective(
        carrier, homography, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    mask = cv2.warpPerspective(
        np.full((h, w), 255, np.uint8), homography, (int(size[0]), int(size[1])), flags=cv2.INTER_NEAREST
    )
    return _Pose(patch, mask, (float(projected[4, 0]), float(projected[4, 1])))


def _category_carrier(
    visit: Visit, carrier: np.ndarray, centre: tuple[float, float], side: float,
    levels: tuple[float, float], fx: np.random.Generator,
) -> np.ndarray:
    light, dark = levels
    if visit.category == "screen":
        return effects.screen(carrier, light, dark, fx)
    if visit.category == "paper":
        return effects.printed_card(carrier, light, dark, fx)
    if visit.category == "damage":
        half = side / 2
        box = (round(centre[0] - half), round(centre[1] - half), round(centre[0] + half), round(centre[1] + half))
        return effects.wear_and_tear(carrier, box, light, dark, fx)
    if visit.category == "lighting":
        return effects.shadow_and_backlight(carrier, fx)
    return carrier


def _build_visit(
    visit: Visit, rng: np.random.Generator, fx: np.random.Generator, width: int, height: int, fps: float
) -> _VisitAssets:
    """A visit's poses and per-frame path. ``rng`` drives the clean scene; ``fx`` only the
    category's effects, so adding a category never changes what a clean visit looks like."""
    modules = _qr_modules(visit.payload)
    module_px = visit.module_px if visit.module_px is not None else rng.uniform(2.5, 4.5)
    module_px = min(module_px, 0.7 * min(width, height) / modules.shape[0])
    carrier, code_centre, side, levels = _carrier(visit, modules, module_px, rng)
    carrier = _category_carrier(visit, carrier, code_centre, side, levels, fx)
    focal_px = 0.83 * width  # a Pi camera's ~62 degree horizontal field of view
    poses = []
    for _ in range(_POSES_PER_VISIT):
        shown = _add_glare(carrier, code_centre, side, rng) if visit.medium == "phone" else carrier
        if visit.category == "glare":
            shown = effects.strong_glare(shown, code_centre, side, fx)
        poses.append(_pose(shown, code_centre, visit.max_tilt_deg, focal_px, rng))

    dwell = max(1, round(visit.dwell_s * fps))
    t = np.arange(dwell) / fps
    margin = side * 0.55
    home_x = rng.uniform(max(margin, width * 0.3), min(width - margin, width * 0.7))
    home_y = rng.uniform(max(margin, height * 0.3), min(height - margin, height * 0.7))
    sway = rng.uniform(4, 12)
    freq = rng.uniform(0.3, 0.8)
    phase = rng.uniform(0, 2 * math.pi, 2)
    x = home_x + sway * np.sin(2 * math.pi * freq * t + phase[0]) + rng.normal(0, visit.shake_px, dwell)
    y = home_y + 0.6 * sway * np.sin(2 * math.pi * freq * 1.3 * t + phase[1]) + rng.normal(0, visit.shake_px, dwell)

    blur = np.zeros(dwell, np.int16)
    blurred = rng.random(dwell) < visit.blur_share
    for j in np.flatnonzero(blurred):
        if rng.random() < 0.6:
            blur[j] = _motion_kernel(rng.uniform(3, 9), rng.uniform(0, 180))
        else:
            blur[j] = _DEFOCUS_FIRST + int(rng.integers(0, 3))
    if visit.category == "blur":
        blur = effects.defocus_frames(dwell, _STRONG_DEFOCUS_FIRST, fx)
    elif visit.category == "motion":
        dx, dy = effects.shaking_hand(t, fx)
        x, y = x + dx, y + dy
        # The streak follows the hand: its length is the distance covered while the shutter is open.
        vx, vy = np.gradient(x), np.gradient(y)
        for j in range(dwell):
            streak = _EXPOSURE_SHARE * math.hypot(vx[j], vy[j])
            blur[j] = _motion_kernel(streak, math.degrees(math.atan2(vy[j], vx[j]))) if streak >= 2.0 else 0

    # Arrival from below and departure to a side: the code crosses the frame edge, streaked.
    arrive = min(dwell // 3, round(_APPROACH_S * fps))
    for j in range(arrive):
        remaining = (1 - (j + 1) / (arrive + 1)) ** 2  # eases out as the hand settles
        lift = remaining * (height - home_y + side * 0.6)
        y[j] += lift
        blur[j] = _motion_kernel(min(17.0, 2.0 * lift / max(1, arrive)), 90)
    leave = min(dwell // 3, round(_LEAVE_S * fps))
    direction = 1 if rng.random() < 0.5 else -1
    for n, j in enumerate(range(dwell - leave, dwell)):
        shift = ((n + 1) / leave) ** 2 * (width * 0.6)
        x[j] += direction * shift
        blur[j] = _motion_kernel(min(17.0, 2.0 * width * 0.6 / max(1, leave)), 0)

    pose = np.zeros(dwell, np.int8)
    current, j = int(rng.integers(0, _POSES_PER_VISIT)), 0
    while j < dwell:  # the hand settles into a pose for 0.3-0.7 s, then shifts
        hold = max(1, round(rng.uniform(0.3, 0.7) * fps))
        pose[j : j + hold] = current
        current = int((current + rng.integers(1, _POSES_PER_VISIT)) % _POSES_PER_VISIT)
        j += hold
    return _VisitAssets(poses, np.round(x).astype(np.int32), np.round(y).astype(np.int32), pose, blur)
