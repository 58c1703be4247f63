"""Cheap image fixes for a QR region the fast decoder located but could not read.

Each fix takes the region (a grey crop, possibly a strided view of the frame) and returns a new
image with a known pixel scale relative to it, so corners found in the fixed image map back to
the frame. They are only ever run on a region, never on a whole frame, and only after zxing-cpp
saw a QR there (or a code was read there a moment ago), so their cost is paid by the few frames
that need them. What each one rescues, measured on the synthetic gate scene, is in
docs/performance.md; the cascade tries them in that order of value for money.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def sharpen(region: np.ndarray) -> np.ndarray:
    """Unsharp mask (sigma 1.5, amount 1.5): restores module edges softened by defocus or light blur."""
    blurred = cv2.GaussianBlur(region, (0, 0), 1.5)
    return cv2.addWeighted(region, 2.5, blurred, -1.5, 0)


def smooth(region: np.ndarray) -> np.ndarray:
    """Gaussian blur (sigma 1 px): averages away texture printed inside the modules (a picture
    showing through an artistic code, a halftone, a screen's pixel grid) that breaks each module
    into dark and light specks; a global threshold then sees the modules again."""
    return cv2.GaussianBlur(region, (0, 0), 1.0)


def local_contrast(region: np.ndarray) -> np.ndarray:
    """CLAHE on 4x4 tiles: lifts modules washed out by a glare veil or a shadow in part of the code
    (a global contrast stretch cannot, as the rest of the code already spans the full range)."""
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(region)


def upscale_sharpen(region: np.ndarray) -> np.ndarray:
    """Bicubic x2 then unsharp mask: gives 2-3 px modules enough pixels for the sampling grid."""
    big = cv2.resize(region, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    blurred = cv2.GaussianBlur(big, (0, 0), 2.0)
    return cv2.addWeighted(big, 2.5, blurred, -1.5, 0)


def upscale(region: np.ndarray) -> np.ndarray:
    """Bicubic x2 (for the decoders with their own, coarser, binarisation)."""
    return cv2.resize(region, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)


def adaptive_threshold(region: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local threshold over 31 px: binarises codes whose light level varies
    across the symbol (glare, shadow edges, moiré bands) where zxing's own 8x8-block binariser
    fails."""
    return cv2.adaptiveThreshold(region, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 5)


def otsu_threshold(region: np.ndarray) -> np.ndarray:
    """One global threshold chosen by Otsu's method: for low-contrast print under even light."""
    return cv2.threshold(region, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def motion_direction(region: np.ndarray) -> float:
    """The direction (radians) a motion streak runs in: the one along which gradients are weakest.

    The structure tensor's dominant orientation is the direction of the strongest gradients; a
    streak smooths the image along its own direction, so it runs perpendicular to that.
    """
    gx = cv2.Sobel(region, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(region, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float(cv2.sumElems(gx * gx)[0]), float(cv2.sumElems(gy * gy)[0]), float(cv2.sumElems(gx * gy)[0])
    return 0.5 * math.atan2(2.0 * jxy, jxx - jyy) + math.pi / 2


def motion_length(region: np.ndarray, angle: float, max_px: int = 21) -> int:
    """The length (px) of a straight motion streak along ``angle``, estimated from the region alone.

    Blurring along a line of length L turns the derivative along that line into the difference of
    two copies of the sharp image's derivative, L apart: its autocorrelation along the line has
    its deepest trough at lag L. The region is turned so the streak runs along the rows, its
    border (where the rotation smeared the edge) dropped, and the trough looked for from 2 px up.

    A sharp code has a trough of its own at the module pitch (neighbouring edges alternate in
    sign), as deep as a streak's: the estimate is the streak when it is longer than a module,
    else about a module, and deconvolving that much from a sharp code only costs a rung.
    """
    height, width = region.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), math.degrees(angle), 1.0)
    rotated = cv2.warpAffine(region.astype(np.float32), turn, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    inset = int(min(height, width) * 0.2)
    rotated = rotated[inset:height - inset, inset:width - inset]
    along = np.diff(rotated, axis=1)
    along -= along.mean()
    energy = float(np.vdot(along, along))
    longest = min(max_px, along.shape[1] // 3)
    if energy <= 0 or longest < 2:
        return 0
    troughs = [float(np.vdot(along[:, lag:], along[:, :-lag])) for lag in range(2, longest + 1)]
    best = int(np.argmin(troughs))
    return best + 2 if troughs[best] < 0 else 0


def deblur_estimated(region: np.ndarray) -> np.ndarray | None:
    """Wiener deconvolution with the streak estimated from the region itself (direction from the
    structure tensor, length from the derivative's autocorrelation); None when the estimate is
    under 3 px, which the sharpening rungs cover.

    On the 30 streaked codes of the bench's motion frames that nothing else read, the estimate
    came within 1 px and 13 degrees of the true streak on every one, and over the ladder's test
    regions this rung read 72 codes where a fixed 7 px guess read 31 (docs/performance.md). The
    low noise-to-signal ratio trusts the estimate: with the streak right, the frequencies it
    attenuated come back.
    """
    angle = motion_direction(region)
    length = motion_length(region, angle)
    if length < 3:
        return None
    return deblur_motion(region, length, angle=angle, noise_to_signal=0.005)


def deblur_motion(region: np.ndarray, length_px: int, *, angle: float | None = None,
                  noise_to_signal: float = 0.02) -> np.ndarray:
    """Wiener deconvolution with a straight streak of ``length_px`` along ``angle`` (radians; by
    default the direction ``motion_direction`` estimates).

    A hand moving during the exposure smears each module into a line; with the streak's length
    and direction known, deconvolution restores the pattern as long as noise leaves the
    frequencies the streak attenuated. The region is padded by replicating its border so the
    filter's wrap-around does not fold one edge onto the other.
    """
    height, width = region.shape
    pad = length_px + 4
    rows, cols = cv2.getOptimalDFTSize(height + 2 * pad), cv2.getOptimalDFTSize(width + 2 * pad)
    padded = cv2.copyMakeBorder(region, pad, rows - height - pad, pad, cols - width - pad,
                                cv2.BORDER_REPLICATE).astype(np.float32)
    if angle is None:
        angle = motion_direction(region)
    half = (length_px - 1) / 2
    dx, dy = half * math.cos(angle), half * math.sin(angle)
    psf = np.zeros((rows, cols), np.float32)
    # The streak centred on the origin, wrapping around, so the result is not shifted.
    centre = (cols // 2, rows // 2)
    start, end = (round(centre[0] - dx), round(centre[1] - dy)), (round(centre[0] + dx), round(centre[1] + dy))
    cv2.line(psf, start, end, 1.0, 1)
    psf = np.roll(psf / psf.sum(), (-centre[1], -centre[0]), (0, 1))
    image_f = cv2.dft(padded, flags=cv2.DFT_COMPLEX_OUTPUT)
    psf_f = cv2.dft(psf, flags=cv2.DFT_COMPLEX_OUTPUT)
    power = cv2.magnitude(psf_f[..., 0], psf_f[..., 1]) ** 2 + noise_to_signal
    # image * conj(psf) / (|psf|^2 + nsr)
    product = cv2.mulSpectrums(image_f, psf_f, 0, conjB=True)
    np.divide(product, power[..., None], out=product)
    restored = cv2.idft(product, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
    return np.clip(restored[pad:pad + height, pad:pad + width], 0, 255).astype(np.uint8)


def local_range(region: np.ndarray, window_px: int = 25) -> np.ndarray:
    """Bicubic x2, then each pixel rescaled between the darkest and lightest pixel around it
    (``window_px`` of the upscaled image, about three modules of a typical gate code).

    A glare veil adds light smoothly: it lifts the dark modules towards white and leaves a code
    whose contrast is a few grey levels in places and full elsewhere. Stretching each
    neighbourhood's own range restores it where any contrast is left; only the saturated core,
    a few percent of the symbol that error correction covers, stays lost.
    """
    big = cv2.resize(region, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (window_px, window_px))
    low = cv2.blur(cv2.erode(big, kernel), (window_px, window_px)).astype(np.float32)
    high = cv2.blur(cv2.dilate(big, kernel), (window_px, window_px)).astype(np.float32)
    stretched = (big.astype(np.float32) - low) * (255.0 / np.maximum(high - low, 8.0))
    return np.clip(stretched, 0, 255).astype(np.uint8)
