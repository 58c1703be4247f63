"""What the synthetic scene renders once: the background, the blur kernels, and each visit's carrier,
poses and per-frame path (``build_visit``). ``synthetic.SyntheticGate`` only composes frames from them.

Sizes follow the frame: a camera at a higher resolution sees the same code at the same distance
with more pixels, so a visit's default module size grows with the frame's width above 640 px (a
1280x720 frame shows the 640x480 scene's code at twice the pixels per module).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import segno

from . import scene_effects as effects
from .scene_effects import DEFOCUS_SIGMAS

if TYPE_CHECKING:
    from .synthetic import Visit

QUIET_ZONE = 4  # modules of light margin around a QR symbol, as the standard requires
POSES_PER_VISIT = 6
APPROACH_S = 0.2  # the hand moving the code into view ...
LEAVE_S = 0.15  # ... and out of it, within the dwell time
REFERENCE_WIDTH = 640  # the frame width the default module sizes are given for


@functools.lru_cache(maxsize=64)
def qr_modules(payload: str) -> np.ndarray:
    """The payload's QR symbol with its quiet zone: 1 = dark module. segno picks version and
    mask, and raises DataOverflowError for a payload no QR can hold."""
    qr = segno.make_qr(payload)
    dark = np.array(qr.matrix, dtype=np.uint8)
    return np.pad(dark, QUIET_ZONE)


@dataclass(slots=True)
class Pose:
    patch: np.ndarray  # grey carrier warped into this pose
    mask: np.ndarray  # 255 where the carrier covers the patch
    anchor: tuple[float, float]  # where the code's centre lands in the patch
    # How far the symbol (without its quiet zone) reaches from the anchor: left, top, right, bottom.
    reach: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Flicker:
    """A fluorescent tube's bands on the carrier (``scene_effects.flicker_gain``)."""

    period_px: float
    depth: float
    phase: float  # at the visit's first dwell frame, in periods
    step: float  # phase advance per frame: 100 Hz pulses against the frame rate


@dataclass(slots=True)
class VisitAssets:
    poses: list[Pose]
    centre_x: np.ndarray  # per dwell frame: where the code's centre is in the frame
    centre_y: np.ndarray
    pose: np.ndarray  # per dwell frame: which pose variant
    blur: np.ndarray  # per dwell frame: 0 none, else index into the scene's blur kernels
    flicker: Flicker | None = None


def render_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
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


MOTION_LENGTHS = (3, 5, 7, 9, 13, 17)
DEFOCUS_FIRST = 1 + 4 * len(MOTION_LENGTHS)
STRONG_DEFOCUS_FIRST = DEFOCUS_FIRST + 3
# Share of a frame period the shutter is open: at 30 fps with the default 16.7 ms exposure cap a
# moving code smears over half the distance it travels between frames.
EXPOSURE_SHARE = 0.5


def frame_scale(width: int) -> float:
    """How many of this frame's pixels one pixel of a 640 px wide frame covers (at least 1): the
    same optics and hand at a higher resolution move and blur by proportionally more pixels."""
    return max(1.0, width / REFERENCE_WIDTH)


def blur_kernels(scale: float = 1.0) -> list[np.ndarray]:
    """Index 0 is unused (no blur); then motion streaks of several lengths and angles, then defocus
    (the clean scene's mild ones, then the ``blur`` category's stronger ones); lengths and widths
    in 640 px frame pixels, times ``scale`` (``frame_scale``)."""
    kernels: list[np.ndarray] = [np.ones((1, 1), np.float32)]
    for base_length in MOTION_LENGTHS:
        length = base_length if scale == 1.0 else 2 * round(base_length * scale / 2) + 1
        for angle in (0, 45, 90, 135):
            k = np.zeros((length, length), np.float32)
            c = length // 2
            dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            cv2.line(k, (round(c - dx * c), round(c - dy * c)), (round(c + dx * c), round(c + dy * c)), 1.0, 1)
            kernels.append(k / k.sum())
    for sigma in (0.8, 1.1, 1.5):
        g = cv2.getGaussianKernel(7 if scale == 1.0 else 2 * math.ceil(3 * sigma * scale) + 1, sigma * scale)
        kernels.append((g @ g.T).astype(np.float32))
    for sigma in DEFOCUS_SIGMAS:
        g = cv2.getGaussianKernel(2 * math.ceil(3 * sigma * scale) + 1, sigma * scale)
        kernels.append((g @ g.T).astype(np.float32))
    return kernels


def motion_kernel(length_px: float, angle_deg: float) -> int:
    """Index of the motion streak kernel nearest to ``length_px`` (in 640 px frame pixels) at ``angle_deg``."""
    li = min(range(len(MOTION_LENGTHS)), key=lambda n: abs(MOTION_LENGTHS[n] - length_px))
    ai = round((angle_deg % 180) / 45) % 4
    return 1 + li * 4 + ai


def carrier(
    visit: Visit, modules: np.ndarray, module_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float], float, tuple[float, float]]:
    """The phone or sheet with the code on it, at frame scale; returns it, the code's centre in
    it, the code's side in pixels, and its light and dark grey levels (the modules' and the quiet
    zone's: swapped on a dark-mode screen)."""
    side = round(modules.shape[0] * module_px)
    if visit.medium == "phone":
        light, dark = rng.uniform(200, 240), rng.uniform(35, 70)  # a screen's black glows and reflects
        w, h = round(side * 1.25), round(side * 1.9)
        surround = rng.uniform(15, 35)  # bezel
    else:
        light, dark = rng.uniform(165, 215), rng.uniform(25, 55)  # matte paper under room light
        w, h = round(side * 1.5), round(side * 1.9)
        surround = light
    background, ink = (dark, light) if visit.category == "inverted" else (light, dark)
    # Draw the code large and area-average it down, as a sensor integrates light over a pixel.
    big = np.where(np.kron(modules, np.ones((8, 8), np.uint8)) > 0, ink, background).astype(np.uint8)
    code = cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA)
    sheet = np.full((h, w), background, np.uint8)
    if visit.medium == "phone":
        bezel = max(3, round(w * 0.05))
        sheet[:, :bezel] = sheet[:, -bezel:] = surround
        sheet[: 3 * bezel, :] = sheet[-3 * bezel :, :] = surround
    cx, cy = w // 2, round(h * 0.42)
    x0, y0 = cx - side // 2, cy - side // 2
    sheet[y0 : y0 + side, x0 : x0 + side] = code
    for row in range(2):  # lines of text above and below the code, as tickets and apps show
        for y in (y0 - round(side * (0.12 + 0.08 * row)), y0 + side + round(side * (0.1 + 0.08 * row))):
            if 0 <= y < h - 4:
                length = round(side * rng.uniform(0.4, 0.9))
                cv2.line(sheet, (cx - length // 2, y), (cx + length // 2, y), int(ink), max(2, round(module_px)))
    if visit.medium == "paper":
        across, down = rng.uniform(-0.12, 0.0), rng.uniform(-0.1, 0.05)  # light falls off across the sheet
        shade = 1.0 + np.add.outer(down * np.arange(h) / h, across * np.arange(w) / w)
        sheet = np.clip(sheet * shade, 0, 255).astype(np.uint8)
    return sheet, (x0 + side / 2, y0 + side / 2), float(side), (light, dark)


def add_glare(sheet: np.ndarray, code_centre: tuple[float, float], side: float, rng: np.random.Generator) -> np.ndarray:
    """A soft specular reflection on a phone screen, washing part of the code out."""
    h, w = sheet.shape
    gx = code_centre[0] + rng.uniform(-0.6, 0.6) * side
    gy = code_centre[1] + rng.uniform(-0.6, 0.6) * side
    radius = rng.uniform(0.12, 0.3) * side
    strength = rng.uniform(0.3, 0.65)
    glared = sheet.copy()
    x0, x1 = max(0, int(gx - 3 * radius)), min(w, int(gx + 3 * radius) + 1)
    y0, y1 = max(0, int(gy - 3 * radius)), min(h, int(gy + 3 * radius) + 1)
    if x1 > x0 and y1 > y0:  # a Gaussian is separable: an outer product over its 3-sigma box
        wx = np.exp(-((np.arange(x0, x1) - gx) ** 2) / (2 * radius**2))
        wy = np.exp(-((np.arange(y0, y1) - gy) ** 2) / (2 * radius**2))
        roi = glared[y0:y1, x0:x1]
        roi[:] = roi + strength * np.outer(wy, wx) * (255.0 - roi)
    return glared


def pose(sheet: np.ndarray, code_centre: tuple[float, float], symbol_half: float, max_tilt_deg: float,
         focal_px: float, rng: np.random.Generator) -> Pose:
    """Warp the carrier as a pinhole camera sees it after rotating the carrier in 3-D."""
    h, w = sheet.shape
    tilt = math.radians(rng.uniform(min(3.0, max_tilt_deg), max_tilt_deg))
    axis = rng.uniform(0, 2 * math.pi)  # direction of the tilt axis in the carrier plane
    roll = math.radians(rng.uniform(-20, 20))
    rotation, _ = cv2.Rodrigues(np.array([math.cos(axis) * tilt, math.sin(axis) * tilt, roll]))
    cx, cy = code_centre
    symbol = [[cx + sx * symbol_half, cy + sy * symbol_half] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h], [cx, cy], *symbol], np.float64)
    plane = np.column_stack([corners - [w / 2, h / 2], np.zeros(len(corners))])
    cam = plane @ rotation.T + [0.0, 0.0, focal_px]  # centre at distance f: unit scale there
    projected = focal_px * cam[:, :2] / cam[:, 2:3]
    origin = projected[:4].min(axis=0)
    projected -= origin
    anchor, reached = projected[4], projected[5:]
    reach = (float(anchor[0] - reached[:, 0].min()), float(anchor[1] - reached[:, 1].min()),
             float(reached[:, 0].max() - anchor[0]), float(reached[:, 1].max() - anchor[1]))
    size = np.ceil(projected[:4].max(axis=0)).astype(int) + 1
    homography = cv2.getPerspectiveTransform(corners[:4].astype(np.float32), projected[:4].astype(np.float32))
    # Replicated borders keep the carrier's edge from blending with black where the mask is set.
    patch = cv2.warpPerspective(
        sheet, homography, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    mask = cv2.warpPerspective(
        np.full((h, w), 255, np.uint8), homography, (int(size[0]), int(size[1])), flags=cv2.INTER_NEAREST
    )
    return Pose(patch, mask, (float(anchor[0]), float(anchor[1])), reach)


def category_carrier(visit: Visit, sheet: np.ndarray, centre: tuple[float, float], side: float,
                     levels: tuple[float, float], module_px: float, fx: np.random.Generator) -> np.ndarray:
    light, dark = levels
    if visit.category == "screen":
        # A phone draws each module on 10-25 screen pixels (a 5 cm code of 45 modules on a 400 ppi
        # screen: 17): a screen pixel is that share of a module in the frame.
        pitch = module_px / fx.uniform(10.0, 25.0)
        return effects.screen(sheet, light, dark, pitch, fx)
    if visit.category == "paper":
        return effects.printed_card(sheet, light, dark, fx)
    if visit.category == "damage":
        half = side / 2
        box = (round(centre[0] - half), round(centre[1] - half), round(centre[0] + half), round(centre[1] + half))
        return effects.wear_and_tear(sheet, box, light, dark, fx)
    if visit.category == "lighting":
        return effects.shadow_and_backlight(sheet, fx)
    return sheet


def _module_px(visit: Visit, modules: int, width: int, height: int, rng: np.random.Generator,
               fx: np.random.Generator) -> float:
    """Pixels per module: the visit's, or drawn for a phone at about 30 cm (scaled with the frame
    width); a close-up fills 75-98 % of the frame's shorter side with the symbol and its quiet
    zone; any other code is kept to 70 % of it."""
    scale = max(1.0, width / REFERENCE_WIDTH)
    module_px = visit.module_px if visit.module_px is not None else rng.uniform(2.5, 4.5) * scale
    if visit.category == "closeup":
        return fx.uniform(0.75, 0.98) * min(width, height) / modules
    return min(module_px, 0.7 * min(width, height) / modules)


def _home(visit: Visit, side: float, width: int, height: int, rng: np.random.Generator,
          fx: np.random.Generator) -> tuple[float, float]:
    """Where the hand holds the code's centre: the middle of the frame, give or take; a close-up
    near the centre (an ``edge`` visit is moved against its edge frame by frame: ``_against_edge``)."""
    margin = side * 0.55
    # Drawn before the close-up's early return so every visit takes the same draws from ``rng``
    # (the scene after a close-up stays the same whatever its size). A symbol too large for the
    # middle band (a close-up fills up to 98 % of the frame) is held at the frame's centre.
    home_x = _uniform_or_middle(rng, max(margin, width * 0.3), min(width - margin, width * 0.7), width)
    home_y = _uniform_or_middle(rng, max(margin, height * 0.3), min(height - margin, height * 0.7), height)
    if visit.category == "closeup":
        return width / 2 + fx.uniform(-0.04, 0.04) * width, height / 2 + fx.uniform(-0.04, 0.04) * height
    return home_x, home_y


def _uniform_or_middle(rng: np.random.Generator, low: float, high: float, extent: int) -> float:
    drawn = rng.uniform(0.0, 1.0)
    return low + drawn * (high - low) if high >= low else extent / 2


def _against_edge(x: np.ndarray, y: np.ndarray, home: tuple[float, float], poses: list[Pose], which: np.ndarray,
                  module_px: float, width: int, height: int, fx: np.random.Generator, frames: range) -> None:
    """Hold an ``edge`` visit's symbol 0.5-3 modules from one edge of the frame, whatever its pose
    (the quiet zone is 4 modules: part of it is outside): the hand's sway along the edge stays,
    across it the symbol's outermost point is kept at that distance."""
    edge = int(fx.integers(0, 4))  # left, top, right, bottom
    gap = fx.uniform(0.5, 3.0) * module_px
    wobble = (x - home[0]) if edge in (1, 3) else (y - home[1])  # the sway across the edge, kept small
    for j in frames:
        reach = poses[which[j]].reach[edge]
        across = gap + reach + 0.15 * abs(float(wobble[j]))
        if edge == 0:
            x[j] = across
        elif edge == 1:
            y[j] = across
        elif edge == 2:
            x[j] = width - across
        else:
            y[j] = height - across


def build_visit(visit: Visit, rng: np.random.Generator, fx: np.random.Generator, width: int, height: int,
                fps: float) -> VisitAssets:
    """A visit's poses and per-frame path. ``rng`` drives the clean scene; ``fx`` only the
    category's effects, so adding a category never changes what a clean visit looks like."""
    modules = qr_modules(visit.payload)
    module_px = _module_px(visit, modules.shape[0], width, height, rng, fx)
    sheet, code_centre, side, levels = carrier(visit, modules, module_px, rng)
    sheet = category_carrier(visit, sheet, code_centre, side, levels, module_px, fx)
    focal_px = 0.83 * width  # a Pi camera's ~62 degree horizontal field of view
    closeup = visit.category == "closeup"
    symbol_half = (modules.shape[0] / 2 - QUIET_ZONE) * module_px
    # Too close to focus: a lens focused for arm's length blurs a phone at 10-15 cm by a share of a module.
    defocus = fx.uniform(0.06, 0.22) * module_px if closeup else 0.0
    poses = []
    for _ in range(POSES_PER_VISIT):
        shown = add_glare(sheet, code_centre, side, rng) if visit.medium == "phone" else sheet
        if visit.category == "glare":
            shown = effects.strong_glare(shown, code_centre, side, fx)
        elif visit.category == "screen":
            shown = effects.brightness_step(shown, fx)
        if defocus:
            shown = cv2.GaussianBlur(shown, (0, 0), defocus)
        poses.append(pose(shown, code_centre, symbol_half, min(visit.max_tilt_deg, 12.0) if closeup
                          else visit.max_tilt_deg, focal_px, rng))

    dwell = max(1, round(visit.dwell_s * fps))
    t = np.arange(dwell) / fps
    home_x, home_y = _home(visit, side, width, height, rng, fx)
    scale = frame_scale(width)
    sway = rng.uniform(4, 12) * scale * (0.3 if closeup or visit.category == "edge" else 1.0)
    freq = rng.uniform(0.3, 0.8)
    phase = rng.uniform(0, 2 * math.pi, 2)
    x = home_x + sway * np.sin(2 * math.pi * freq * t + phase[0]) + rng.normal(0, visit.shake_px * scale, dwell)
    y = (home_y + 0.6 * sway * np.sin(2 * math.pi * freq * 1.3 * t + phase[1])
         + rng.normal(0, visit.shake_px * scale, dwell))

    blur = np.zeros(dwell, np.int16)
    blurred = rng.random(dwell) < visit.blur_share
    for j in np.flatnonzero(blurred).tolist():
        if rng.random() < 0.6:
            blur[j] = motion_kernel(rng.uniform(3, 9), rng.uniform(0, 180))
        else:
            blur[j] = DEFOCUS_FIRST + int(rng.integers(0, 3))
    if visit.category == "blur":
        blur = effects.defocus_frames(dwell, STRONG_DEFOCUS_FIRST, fx)
    elif visit.category == "motion":
        dx, dy = effects.shaking_hand(t, fx)
        x, y = x + dx * scale, y + dy * scale
        # The streak follows the hand: its length is the distance covered while the shutter is open.
        vx, vy = np.gradient(x), np.gradient(y)
        for j in range(dwell):
            streak = EXPOSURE_SHARE * math.hypot(vx[j], vy[j]) / scale
            blur[j] = motion_kernel(streak, math.degrees(math.atan2(vy[j], vx[j]))) if streak >= 2.0 else 0

    # Arrival from below and departure to a side: the code crosses the frame edge, streaked.
    arrive = min(dwell // 3, round(APPROACH_S * fps))
    for j in range(arrive):
        remaining = (1 - (j + 1) / (arrive + 1)) ** 2  # eases out as the hand settles
        lift = remaining * (height - home_y + side * 0.6)
        y[j] += lift
        blur[j] = motion_kernel(min(17.0, 2.0 * lift / scale / max(1, arrive)), 90)
    leave = min(dwell // 3, round(LEAVE_S * fps))
    direction = 1 if rng.random() < 0.5 else -1
    for n, j in enumerate(range(dwell - leave, dwell)):
        shift = ((n + 1) / leave) ** 2 * (width * 0.6)
        x[j] += direction * shift
        blur[j] = motion_kernel(min(17.0, 2.0 * width / scale * 0.6 / max(1, leave)), 0)

    which = np.zeros(dwell, np.int8)
    current, j = int(rng.integers(0, POSES_PER_VISIT)), 0
    while j < dwell:  # the hand settles into a pose for 0.3-0.7 s, then shifts
        hold = max(1, round(rng.uniform(0.3, 0.7) * fps))
        which[j : j + hold] = current
        current = int((current + rng.integers(1, POSES_PER_VISIT)) % POSES_PER_VISIT)
        j += hold
    if visit.category == "edge":  # once settled: the hand brings the code in and takes it away as in any visit
        _against_edge(x, y, (home_x, home_y), poses, which, module_px, width, height, fx, range(arrive, dwell - leave))
    flicker = None
    if visit.category == "flicker":
        # 100 Hz pulses read out over about a frame period: 3-4 bands per frame, drifting by the
        # fraction of a pulse left over from each frame (100 / 30 = 3.33 pulses: a third).
        pulses = 100.0 / fps
        flicker = Flicker(period_px=height / fx.uniform(3.0, 4.0), depth=fx.uniform(0.2, 0.45),
                          phase=fx.uniform(0, 1), step=pulses - math.floor(pulses))
    return VisitAssets(poses, np.round(x).astype(np.int32), np.round(y).astype(np.int32), which, blur, flicker)
