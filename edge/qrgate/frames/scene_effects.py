"""What makes a synthetic visit hard: the effects of each scene category beyond the clean scene.

Each category is a situation a gate camera meets every day and where open decoders fail most:

* ``screen``: a phone screen at any brightness (a dim screen is a low-contrast code), moiré from
  the sensor sampling the screen's pixel grid, the usual bezel and a mild reflection.
* ``glare``: a phone under a ceiling light: a specular highlight that saturates part of the code,
  moving as the hand tilts the phone (it is drawn per pose).
* ``paper``: a printed card: paper texture, folds (a brightness step and a crease line), low
  contrast from a tired printer.
* ``damage``: a printed card that has been in a pocket: scratches, stains, worn patches and a torn
  corner covering part of the code.
* ``blur``: a camera hunting for focus, or a code held too close: defocus on most frames.
* ``motion``: a hand that keeps moving: larger, faster sway, every frame streaked along the
  hand's path in proportion to its speed.
* ``lighting``: mixed lighting: a hard shadow across the code, a bright window behind the visitor
  that leaves the code underexposed.
* ``closeup``: a phone pushed up to the camera: the code fills most of the frame (modules of 10-40
  px), the phone overflows it, and the lens, focused for arm's length, cannot focus that close.
* ``edge``: the code held at the frame's edge, part of its quiet zone outside the frame.
* ``inverted``: a phone in dark mode: light modules on a dark screen.
* ``flicker``: a printed card under a fluorescent tube on 50 Hz mains: the light pulses at 100 Hz,
  and the rolling shutter turns that into bright and dark bands that drift from frame to frame.

``screen`` is rendered the way a camera sees a screen: the code is drawn on the screen's pixel grid
(RGB sub-pixel stripes, dark gaps between pixel rows), at a pitch that depends on how many camera
pixels the screen covers, and each camera pixel integrates the part of the grid it sees. Where the
grid's pitch comes near the camera's pixel pitch (a high-resolution frame, a phone held close)
the residue of that integration is real moiré, not a pattern drawn on top.

Carrier effects act on the carrier (the phone or sheet at frame scale, before the perspective
warp), so they cost nothing per frame; blur and motion choose each frame's blur kernel. Every
function draws only from the ``rng`` it is given, so a category never changes what the clean
scene renders for the same seed.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

Category = Literal["clean", "screen", "glare", "paper", "damage", "blur", "motion", "lighting",
                   "closeup", "edge", "inverted", "flicker"]
CATEGORIES: tuple[Category, ...] = ("clean", "screen", "glare", "paper", "damage", "blur", "motion", "lighting",
                                    "closeup", "edge", "inverted", "flicker")
# Where every open decoder fails most (motion, glare, damage and blur on public photo benchmarks).
HARD_CATEGORIES: tuple[Category, ...] = ("blur", "motion", "glare", "damage")
# The medium a category implies; None: either (the visit's own, phone unless said otherwise).
CATEGORY_MEDIUM: dict[Category, str | None] = {
    "clean": None, "screen": "phone", "glare": "phone", "paper": "paper", "damage": "paper",
    "blur": None, "motion": None, "lighting": None,
    "closeup": "phone", "edge": None, "inverted": "phone", "flicker": "paper",
}

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 of the code within the carrier


def relevel(carrier: np.ndarray, light: float, dark: float, new_light: float, new_dark: float) -> np.ndarray:
    """Map the carrier's ``dark``..``light`` range onto ``new_dark``..``new_light`` (other tones follow)."""
    scale = (new_light - new_dark) / (light - dark)
    return np.clip((carrier.astype(np.float32) - dark) * scale + new_dark, 0, 255).astype(np.uint8)


def screen(carrier: np.ndarray, light: float, dark: float, pitch_px: float, rng: np.random.Generator) -> np.ndarray:
    """The code as a camera sees a phone screen: any brightness from dim to full (a dim screen is a
    low-contrast code, and its black is no darker: the backlight leaks), shown through the
    screen's pixel grid at ``pitch_px`` camera pixels per screen pixel (``screen_grid``)."""
    brightness = rng.uniform(0.45, 1.05)
    new_light = min(250.0, light * brightness)
    new_dark = dark * rng.uniform(0.8, 1.6)
    shown = relevel(carrier, light, dark, new_light, min(new_dark, new_light - 50)).astype(np.float32)
    shown *= screen_grid(shown.shape, pitch_px, rng)
    return np.clip(shown, 0, 255).astype(np.uint8)


APERTURE = 0.5  # a camera pixel's light-gathering width for one colour, in pixel pitches


def _fourier(profile: np.ndarray, harmonics: int) -> np.ndarray:
    """Complex Fourier coefficients 1..``harmonics`` of one period of ``profile`` (mean 1)."""
    spectrum = np.fft.rfft(profile / profile.mean()) / len(profile)
    return 2 * spectrum[1:harmonics + 1]


def screen_grid(shape: tuple[int, int], pitch_px: float, rng: np.random.Generator) -> np.ndarray:
    """How much light each camera pixel receives from a screen's pixel grid, relative to a uniform
    screen (mean 1).

    A screen pixel is three vertical sub-pixel stripes (red, green, blue, weighted by their share
    of luminance) above a dark gap between pixel rows; the grid is turned a few degrees against the
    sensor's rows and its pitch is ``pitch_px`` camera pixels. Each harmonic of the grid reaches a
    camera pixel attenuated by the lens (a Gaussian blur of 0.2-0.35 px) and by the pixel's
    aperture (a sinc along each axis; half the pixel pitch wide, because a Bayer sensor samples
    each colour on every other pixel), then is sampled at the pixel's centre: a harmonic
    above the sampling rate that survives folds back as a slow beat, the moiré. So a screen seen
    at under one camera pixel per screen pixel (a phone at arm's length in a 640x480 frame) shows
    almost nothing of its grid, and one at 0.6-2 px per screen pixel (a high-resolution frame, a
    phone held close) shows strong moiré, as photos of screens do.
    """
    h, w = shape
    angle = math.radians(rng.uniform(-8.0, 8.0))
    lens_sigma = rng.uniform(0.2, 0.35)
    gap = rng.uniform(0.1, 0.25)  # the dark band between pixel rows, as a share of the pitch
    period = np.arange(240) / 240
    stripes = _fourier(np.array((0.2126, 0.7152, 0.0722))[np.minimum((period * 3).astype(int), 2)], 4)
    rows = _fourier((period >= gap).astype(float), 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cos, sin = math.cos(angle), math.sin(angle)

    def sensed(coefficients: np.ndarray, along: np.ndarray, direction: tuple[float, float]) -> np.ndarray:
        total = np.ones((h, w), np.float32)
        for n, coefficient in enumerate(coefficients, start=1):
            f = n / pitch_px  # cycles per camera pixel along the grid's axis
            gain = (np.sinc(APERTURE * f * direction[0]) * np.sinc(APERTURE * f * direction[1])
                    * math.exp(-2 * math.pi**2 * lens_sigma**2 * f * f))
            if abs(gain * coefficient) > 1e-3:
                total += (gain * abs(coefficient) * np.cos(2 * math.pi * n * along + np.angle(coefficient))).astype(
                    np.float32)
        return total

    u = (xs * cos + ys * sin) / pitch_px  # screen pixel columns
    v = (-xs * sin + ys * cos) / pitch_px  # screen pixel rows
    grid = sensed(stripes, u, (cos, sin)) * sensed(rows, v, (-sin, cos))
    return np.maximum(grid, 0.0)


def brightness_step(carrier: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The phone's auto-brightness stepping as the hand moves through the light: one pose brighter
    or dimmer than the last by up to a quarter."""
    return np.clip(carrier.astype(np.float32) * rng.uniform(0.75, 1.2), 0, 255).astype(np.uint8)


def flicker_gain(rows: int, period_px: float, phase: float, depth: float) -> np.ndarray:
    """Per row of a frame, the share of light a 100 Hz flickering tube gives it: a rolling shutter
    exposes each row at a different moment of the pulse, so the pulse becomes bands ``period_px``
    rows apart, ``depth`` deep (a short exposure catches more of the pulse)."""
    rows_at = np.arange(rows, dtype=np.float32)
    return (1.0 - depth * 0.5 * (1.0 + np.sin(2 * math.pi * (rows_at / period_px + phase)))).astype(np.float32)


def strong_glare(
    carrier: np.ndarray, centre: tuple[float, float], side: float, rng: np.random.Generator
) -> np.ndarray:
    """The reflection of a ceiling light on a phone screen, one per pose (it moves as the hand
    tilts): a broad veil that lifts the blacks and flattens contrast over much of the code, and
    a small core past the sensor's full well where the modules are gone."""
    h, w = carrier.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gx = centre[0] + rng.uniform(-0.4, 0.4) * side
    gy = centre[1] + rng.uniform(-0.4, 0.4) * side
    squash = rng.uniform(0.5, 1.0)  # a strip light reflects as an ellipse
    veil_r = rng.uniform(0.2, 0.45) * side
    core_r = rng.uniform(0.05, 0.12) * side
    d2 = ((xs - gx) ** 2 + ((ys - gy) / squash) ** 2)
    veil = rng.uniform(0.5, 0.85) * np.exp(-d2 / (2 * veil_r**2))
    core = np.minimum(1.0, 1.5 * np.exp(-d2 / (2 * core_r**2)))
    weight = np.maximum(veil, core)
    glared = carrier + weight * (255.0 - carrier)
    return np.clip(glared, 0, 255).astype(np.uint8)


def printed_card(
    carrier: np.ndarray, light: float, dark: float, rng: np.random.Generator
) -> np.ndarray:
    """Low-contrast print, paper texture and one or two folds."""
    new_light = rng.uniform(150, 200)
    new_dark = new_light - rng.uniform(55, 100)
    card = relevel(carrier, light, dark, new_light, new_dark).astype(np.float32)
    h, w = card.shape
    fibres = rng.normal(0, 1, (h // 3 + 2, w // 3 + 2)).astype(np.float32)
    card += rng.uniform(3, 7) * cv2.resize(fibres, (w, h), interpolation=cv2.INTER_LINEAR)
    card += rng.normal(0, 2.0, (h, w)).astype(np.float32)  # grain
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(1, 3))):
        # A fold: the sheet's two halves face the light at different angles, and the crease
        # itself shows as a thin dark line with a bright edge.
        angle = rng.uniform(0, math.pi)
        nx, ny = math.cos(angle), math.sin(angle)
        offset = rng.uniform(0.3, 0.7) * (abs(nx) * w + abs(ny) * h)
        distance = xs * nx + ys * ny - offset * (1 if nx >= 0 else -1) - (w * min(nx, 0))
        card *= np.where(distance > 0, rng.uniform(0.8, 0.95), 1.0).astype(np.float32)
        card -= rng.uniform(15, 35) * np.exp(-(distance / 1.5) ** 2)
        card += rng.uniform(5, 15) * np.exp(-((distance - 3) / 2.0) ** 2)
    return np.clip(card, 0, 255).astype(np.uint8)


def wear_and_tear(carrier: np.ndarray, code: Box, light: float, dark: float, rng: np.random.Generator) -> np.ndarray:
    """Scratches, stains, worn patches and a torn corner over the code."""
    card = carrier.copy()
    x0, y0, x1, y1 = code
    side = x1 - x0
    for _ in range(int(rng.integers(1, 4))):  # scratches: thin light lines through the print
        p = rng.uniform([x0, y0], [x1, y1], (2, 2)).astype(int)
        cv2.line(card, tuple(map(int, p[0])), tuple(map(int, p[1])), int(light), int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(1, 3))):  # stains: dark, soft-edged blobs
        cx, cy = rng.uniform([x0, y0], [x1, y1])
        axes = (int(side * rng.uniform(0.04, 0.1)), int(side * rng.uniform(0.03, 0.08)))
        stain = np.zeros_like(card)
        cv2.ellipse(stain, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 255, -1)
        stain = cv2.GaussianBlur(stain, (0, 0), 2.0).astype(np.float32) / 255.0
        card = (card * (1 - 0.7 * stain) + dark * 0.7 * stain).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):  # worn patches: the toner rubbed off
        cx, cy = rng.uniform([x0, y0], [x1, y1])
        r = side * rng.uniform(0.04, 0.09)
        worn = np.zeros_like(card)
        cv2.circle(worn, (int(cx), int(cy)), int(r), 255, -1)
        worn = cv2.GaussianBlur(worn, (0, 0), r / 3 + 0.5).astype(np.float32) / 255.0
        card = (card * (1 - 0.8 * worn) + light * 0.8 * worn).astype(np.uint8)
    if rng.random() < 0.5:  # a torn corner: a triangle of the sheet (and code) missing
        corner_x = x0 if rng.random() < 0.5 else x1
        corner_y = y0 if rng.random() < 0.5 else y1
        cut = side * rng.uniform(0.06, 0.12)
        sx = 1 if corner_x == x0 else -1
        sy = 1 if corner_y == y0 else -1
        tri = np.array([[corner_x, corner_y], [corner_x + sx * cut, corner_y], [corner_x, corner_y + sy * cut]],
                       np.int32)
        cv2.fillPoly(card, [tri], int(light * 1.05) if light < 240 else 250)
    return card


def shadow_and_backlight(carrier: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hard shadow edge across the carrier and an overall underexposure from a bright background."""
    h, w = carrier.shape
    exposure = rng.uniform(0.5, 0.85)  # auto-exposure set by the bright window behind
    shaded = carrier.astype(np.float32) * exposure
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    offset = rng.uniform(-0.25, 0.25) * min(w, h)
    distance = (xs - w / 2) * math.cos(angle) + (ys - h / 2) * math.sin(angle) - offset
    penumbra = rng.uniform(1.0, 6.0)  # a small light source casts a sharp edge
    depth = rng.uniform(0.35, 0.6)
    shaded *= 1.0 - depth * 0.5 * (1.0 + np.tanh(distance / (2 * penumbra)))  # a logistic step
    return np.clip(shaded, 0, 255).astype(np.uint8)


DEFOCUS_SIGMAS = (1.1, 1.4, 1.8)


def defocus_frames(count: int, first_kernel: int, rng: np.random.Generator) -> np.ndarray:
    """Per frame, 0 (sharp) or the index of a defocus kernel: most frames out of focus, by varying amounts."""
    blur = np.zeros(count, np.int16)
    for j in range(count):
        if rng.random() < 0.75:
            blur[j] = first_kernel + int(rng.integers(0, len(DEFOCUS_SIGMAS)))
    return blur


def shaking_hand(t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Extra hand movement for ``motion``: larger and faster sway than the clean scene's."""
    amplitude = rng.uniform(20, 45)
    freq = rng.uniform(1.0, 2.0)
    phase = rng.uniform(0, 2 * math.pi, 2)
    dx = amplitude * np.sin(2 * math.pi * freq * t + phase[0])
    dy = 0.7 * amplitude * np.sin(2 * math.pi * freq * 1.4 * t + phase[1])
    return dx, dy

