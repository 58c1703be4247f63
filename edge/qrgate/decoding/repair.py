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


def deblur_motion(region: np.ndarray, length_px: int, noise_to_signal: float = 0.02) -> np.ndarray:
    """Wiener deconvolution with a straight streak of ``length_px`` along the estimated direction.

    A hand moving during the exposure smears each module into a line: over roughly 1-2 module
    widths the pattern survives with reduced contrast that deconvolution restores; beyond that
    the information is gone. The streak length is unknown, so the cascade tries a few.
    """
    height, width = region.shape
    rows, cols = cv2.getOptimalDFTSize(height), cv2.getOptimalDFTSize(width)
    padded = cv2.copyMakeBorder(region, 0, rows - height, 0, cols - width, cv2.BORDER_REPLICATE).astype(np.float32)
    angle = motion_direction(region)
    half = (length_px - 1) / 2
    dx, dy = half * math.cos(angle), half * math.sin(angle)
    psf = np.zeros((rows, cols), np.float32)
    # The streak centred on the origin, wrapping around, so the result is not shifted.
    centre = (cols // 2, rows // 2)
    cv2.line(psf, (round(centre[0] - dx), round(centre[1] - dy)), (round(centre[0] + dx), round(centre[1] + dy)), 1.0, 1)
    psf = np.roll(psf / psf.sum(), (-centre[1], -centre[0]), (0, 1))
    image_f = cv2.dft(padded, flags=cv2.DFT_COMPLEX_OUTPUT)
    psf_f = cv2.dft(psf, flags=cv2.DFT_COMPLEX_OUTPUT)
    power = cv2.magnitude(psf_f[..., 0], psf_f[..., 1]) ** 2 + noise_to_signal
    # image * conj(psf) / (|psf|^2 + nsr)
    product = cv2.mulSpectrums(image_f, psf_f, 0, conjB=True)
    product /= power[..., None]
    restored = cv2.idft(product, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
    return np.clip(restored[:height, :width], 0, 255).astype(np.uint8)
