"""Reading a QR code on a bent or wrinkled surface: its module grid followed where it is, not
where a plane would put it.

zxing-cpp samples a located symbol through one perspective transform (four corners, one
alignment pattern): right for a flat card or screen at any tilt, wrong for a pass bent in the
hand, a label on fabric or a sticker on a bottle. There the modules drift off the projected
grid by a fraction of a module, differently in each part of the symbol, the sampled bits are
wrong in whole areas and error correction gives up (``ChecksumError``, though every module is
sharp and visible).

Where each module really is can be measured from the image: module boundaries are edges, one
module pitch apart. On the symbol rectified by the located corners (``PITCH_PX`` pixels per
module), the local phase of the edge strength against that pitch (a Gaussian-windowed Fourier
coefficient at the module frequency, in x and in y) says by how much the boundaries around each
point are shifted from the regular grid. A phase only knows the shift modulo a module, so the
field is unwrapped (``unwrap``: it varies smoothly, and a fold of more than half a module shows as
a jump between neighbours). Moving every pixel by that shift flattens the symbol; it is repeated,
each pass measuring what the last one left (``SCHEDULES``). The flattened symbol is then
sampled at the centre of each module, thresholded against its neighbourhood, drawn as a clean
symbol and handed to zxing-cpp, whose error correction decides whether the bits are right (a
wrongly sampled symbol fails its Reed-Solomon check; it is not read as another text).

The symbol's size in modules is not reported for a symbol that failed, so it is measured: the
strongest period of the rectified symbol's edge profile, snapped to a QR size (17 + 4 v). (On
the photos every read was at the size measured first; the next likeliest read none more.)

On ../shared/qr-photos (the zxing-cpp project's photos), of the 9 labels on wrinkled fabric
(folder qrcode-4) that a bare zxing-cpp call does not read, 8 read this way (docs/performance.md);
on a synthetic code bent by 0.3-0.6 of a module, 7 of 18 (1 without the unwrapping). It reads
none of the synthetic gate scene's regions (they are flat; what fails there is blur), where it
costs 0.16 ms median: it gives up at once without a located symbol with a checksum error.
OpenCV's ``QRCodeDetector.detectAndDecodeCurved`` read 3 of the 9, and crashed the process (a
segmentation fault, OpenCV 5.1) on some synthetic gate regions, so it is not used.
"""

from __future__ import annotations

import cv2
import numpy as np
import zxingcpp

from .base import DecodedCode, image_corners

NAME = "warped"
PITCH_PX = 8  # rectified pixels per module: enough for the phase windows, cheap for large symbols
# Phase windows (modules), coarse to fine, tried in turn: the fine one follows short folds, the
# coarse-to-fine one a wide bend (on the fabric photos: 15 and 16 of 48 alone, 16 together).
SCHEDULES = ((2.0, 2.0), (6.0, 3.0, 2.0))
MIN_SIZE, MAX_SIZE = 21, 177  # QR versions 1-40
MIN_MODULE_PX = 2.0
MIN_SIDE_PX = 3 * MIN_SIZE  # a located symbol smaller than this (3 px a module at version 1) is not followed
DRAWN_MODULE_PX = 4  # the clean symbol handed to zxing-cpp


class WarpedGridDecoder:
    """``decode(region)``: zxing-cpp locates the symbol in ``region``; if it cannot read it, the
    grid is flattened by local phase and read again (module docstring). Stateless."""

    name = NAME

    def __init__(self) -> None:
        self._locate: dict[str, object] = {
            "formats": zxingcpp.BarcodeFormat.QRCode, "return_errors": True, "try_rotate": False,
            "try_invert": False, "try_downscale": False, "text_mode": zxingcpp.TextMode.Plain}
        self._read: dict[str, object] = {
            "formats": zxingcpp.BarcodeFormat.QRCode, "try_rotate": False, "try_invert": False,
            "try_downscale": False, "text_mode": zxingcpp.TextMode.Plain}

    def decode(self, grey: np.ndarray) -> list[DecodedCode]:
        located = zxingcpp.read_barcodes(grey, **self._locate)  # type: ignore[arg-type]
        if any(barcode.valid for barcode in located):
            return []  # readable as it is: an earlier rung's business, not a warp
        # A checksum error: the grid was sampled and the bits came out wrong, which is what a
        # warped grid does (every read on the photos was of such a symbol). A format error means
        # not even the format bits beside the finder patterns were read: no grid to follow.
        quads = [_quad(barcode.position) for barcode in located
                 if barcode.error is not None and barcode.error.type == zxingcpp.ErrorType.Checksum]
        quads = [quad for quad in quads if cv2.contourArea(quad) >= MIN_SIDE_PX ** 2]
        if not quads:
            return []
        quad = max(quads, key=cv2.contourArea)  # the whole symbol, not one finder pattern pair
        corners = image_corners((float(x), float(y)) for x, y in quad)
        sizes = likely_sizes(grey, quad)
        if not sizes:
            return []
        rectified = rectify(grey, quad, sizes[0])
        for schedule in SCHEDULES:
            text = self._read_flattened(rectified, sizes[0], schedule)
            if text is not None:
                return [DecodedCode(text, corners, NAME)]
        return []

    def _read_flattened(self, rectified: np.ndarray, size: int, schedule: tuple[float, ...]) -> str | None:
        flat = rectified
        for window in schedule:
            flat = flatten(flat, window)
        drawn = draw(module_bits(flat, size))
        found = zxingcpp.read_barcodes(drawn, **self._read)  # type: ignore[arg-type]
        return found[0].text if found else None


def _quad(position: zxingcpp.Position) -> np.ndarray:
    points = (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    return np.array([(p.x, p.y) for p in points], np.float32)


def rectify(grey: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """The symbol inside ``quad`` (its corners in the symbol's own order) as a square of ``size``
    modules of ``PITCH_PX`` pixels."""
    side = size * PITCH_PX
    square = np.array([(0, 0), (side, 0), (side, side), (0, side)], np.float32)
    transform = cv2.getPerspectiveTransform(quad, square)
    return cv2.warpPerspective(grey, transform, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def likely_sizes(grey: np.ndarray, quad: np.ndarray) -> list[int]:
    """QR sizes (modules a side) in order of likelihood, from the period of the symbol's edges.

    The symbol rectified to 512 px; the mean edge strength along x of each column (and along y
    of each row) peaks at module boundaries, so its spectrum peaks at the symbol's size. Sizes
    a QR symbol can have (17 + 4 v) are ranked by the spectrum's magnitude there.
    """
    side = 512
    square = np.array([(0, 0), (side, 0), (side, side), (0, side)], np.float32)
    image = cv2.warpPerspective(grey, cv2.getPerspectiveTransform(quad, square), (side, side),
                                flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    across = np.abs(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)).mean(axis=0)
    down = np.abs(cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)).mean(axis=1)
    spectrum = np.abs(np.fft.rfft(across - across.mean())) + np.abs(np.fft.rfft(down - down.mean()))
    # A module of under MIN_MODULE_PX pixels of the frame is too small to have been located.
    largest = min(MAX_SIZE, len(spectrum) - 1, max(cv2.boundingRect(quad)[2:]) / MIN_MODULE_PX)
    sizes = [size for size in range(MIN_SIZE, MAX_SIZE + 1, 4) if size <= largest]
    return sorted(sizes, key=lambda size: -float(spectrum[size]))


def boundary_shift(image: np.ndarray, axis: int, window_modules: float) -> np.ndarray:
    """Per module (a ``size`` x ``size`` array for an image of ``size`` modules), how far (px,
    within half a module) the module boundaries across ``axis`` (1: x, 0: y) lie from the regular
    grid of ``PITCH_PX``: the phase of the edge strength's Fourier coefficient at the module
    frequency, averaged over a Gaussian window of ``window_modules``.

    The products are averaged over each module first and the window applied on that module grid:
    the shift varies over several modules, and blurring 64 times fewer pixels is what keeps the
    whole read at a few milliseconds.
    """
    edges = np.abs(cv2.Sobel(image, cv2.CV_32F, axis, 1 - axis, ksize=3))
    length = image.shape[1 - axis]
    angle = 2 * np.pi * np.arange(length, dtype=np.float32) / PITCH_PX
    cos, sin = np.cos(angle), np.sin(angle)
    if axis == 1:
        cos, sin = cos[None, :], sin[None, :]
    else:
        cos, sin = cos[:, None], sin[:, None]
    modules = (image.shape[1] // PITCH_PX, image.shape[0] // PITCH_PX)
    real = cv2.resize(edges * cos, modules, interpolation=cv2.INTER_AREA)
    imaginary = cv2.resize(edges * -sin, modules, interpolation=cv2.INTER_AREA)
    sigma = window_modules / 2
    real = cv2.GaussianBlur(real, (0, 0), sigma)
    imaginary = cv2.GaussianBlur(imaginary, (0, 0), sigma)
    shift: np.ndarray = (unwrap(np.arctan2(-imaginary, real)) * (PITCH_PX / (2 * np.pi))).astype(np.float32)
    return shift


def unwrap(phase: np.ndarray) -> np.ndarray:
    """The smooth field whose wrapped values are ``phase`` (radians), least squares: the Poisson
    equation on the wrapped differences between neighbours, solved by FFT on the field mirrored
    both ways (Ghiglia and Romero's method), its constant set to agree with ``phase`` on average.

    A phase is only known modulo a module: where a fold shifts the modules by more than half of
    one, the raw phase jumps to the other side and the flattening would pull those modules onto
    their neighbours' places. The shift varies smoothly across the symbol, so following it from
    neighbour to neighbour recovers the whole module's worth (on a synthetic code bent by up to
    0.6 of a module: 7 of 18 read against 1 without; on the fabric photos, 16 views of 48
    against 14).
    """
    height, width = phase.shape
    along_x = np.zeros_like(phase)
    along_y = np.zeros_like(phase)
    along_x[:, :-1] = _wrapped(np.diff(phase, axis=1))
    along_y[:-1, :] = _wrapped(np.diff(phase, axis=0))
    divergence = along_x + along_y
    divergence[:, 1:] -= along_x[:, :-1]
    divergence[1:, :] -= along_y[:-1, :]
    mirrored = np.block([[divergence, divergence[:, ::-1]], [divergence[::-1, :], divergence[::-1, ::-1]]])
    spectrum = np.fft.fft2(mirrored)
    rows = np.arange(2 * height)[:, None]
    cols = np.arange(2 * width)[None, :]
    eigen = 2 * np.cos(np.pi * rows / height) + 2 * np.cos(np.pi * cols / width) - 4
    eigen[0, 0] = 1.0
    spectrum /= eigen
    spectrum[0, 0] = 0.0
    smooth = np.real(np.fft.ifft2(spectrum))[:height, :width]
    result: np.ndarray = smooth + np.angle(np.mean(np.exp(1j * (phase - smooth))))
    return result


def _wrapped(angle: np.ndarray) -> np.ndarray:
    result: np.ndarray = (angle + np.pi) % (2 * np.pi) - np.pi
    return result


def flatten(image: np.ndarray, window_modules: float) -> np.ndarray:
    """``image`` with every pixel moved so that the module boundaries fall on the regular grid."""
    float_image = image.astype(np.float32)
    height, width = image.shape
    # Module-grid shifts, spread back over the pixels (linearly: the field is smooth).
    shift_x, shift_y = (cv2.resize(boundary_shift(float_image, axis, window_modules), (width, height),
                                   interpolation=cv2.INTER_LINEAR) for axis in (1, 0))
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, xs + shift_x, ys + shift_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def module_bits(flat: np.ndarray, size: int) -> np.ndarray:
    """True for a dark module: the mean of each module's central half, darker than the mean of its
    neighbourhood (about five modules) and of the whole symbol, half and half."""
    cells = flat[:size * PITCH_PX, :size * PITCH_PX].astype(np.float32).reshape(size, PITCH_PX, size, PITCH_PX)
    inner = slice(PITCH_PX // 4, PITCH_PX - PITCH_PX // 4)
    means = cells[:, inner, :, inner].mean(axis=(1, 3))
    local = cv2.GaussianBlur(means, (0, 0), 2.5)
    result: np.ndarray = means < 0.5 * local + 0.5 * float(means.mean())
    return result


def draw(bits: np.ndarray) -> np.ndarray:
    """The module grid as a clean symbol with its 4-module quiet zone."""
    image = np.pad(np.where(bits, 0, 255).astype(np.uint8), 4, constant_values=255)
    return cv2.resize(image, None, fx=DRAWN_MODULE_PX, fy=DRAWN_MODULE_PX, interpolation=cv2.INTER_NEAREST)
