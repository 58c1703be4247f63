"""Build the configured decoder: the cascade, or a backend with a whole-frame fallback; and the
per-frame pipeline (presence gate and region tracking) around it."""

from __future__ import annotations

import logging

from ..errors import DecoderUnavailable
from .base import Decoder
from .cascade import CascadeDecoder, default_attempts, wide_attempts
from .chain import FallbackDecoder
from .opencv import OpenCvDecoder
from .photo import PhotoDecoder, default_passes
from .pipeline import FramePipeline
from .presence import PresenceGate
from .small_codes import SmallCodeLook
from .tracking import RegionTracker
from .zbar import ZbarDecoder
from .zxing import ZxingDecoder

log = logging.getLogger(__name__)

BACKENDS = ("zxing", "zbar")
# Rungs of the repair ladder the gate tries: together they read 277 of the 280 regions the whole
# ladder reads on the synthetic scene (docs/performance.md), at about 11 ms here for a region none
# of them reads (a Pi 4: 45-100 ms, on a decode thread of its own).
DEFAULT_MAX_REPAIRS = 6


def build_decoder(
    backend: str = "zxing",
    fallback: str | None = "zbar",
    *,
    try_rotate: bool = False,
    try_invert: bool = True,
    try_downscale: bool = True,
    repair: bool = True,
    max_repairs: int | None = DEFAULT_MAX_REPAIRS,
) -> Decoder:
    """The decoder for ``backend``.

    With zxing as the backend and ``repair`` on, the cascade: zxing on the frame, and on a QR it
    located but could not read, the repair ladder (``max_repairs`` rungs, None for all) on that
    region; the ladder's other decoders are ``fallback`` (zbar, unless None) and OpenCV.
    Otherwise ``backend`` with ``fallback`` behind it on whole frames (FallbackDecoder), unless
    ``fallback`` is None or the backend itself.

    The ``try_*`` flags are zxing-cpp options (ZxingDecoder says what each costs and reads) and
    apply to zxing's whole-frame pass; the ladder's rungs work on a region at one polarity and
    scale and use plain zxing. ZBar has no equivalents. A missing primary library raises
    DecoderUnavailable; a missing fallback library only loses the fallback, with one warning.
    """
    for role, value in (("backend", backend), ("fallback", fallback)):
        if value is not None and value not in BACKENDS:
            raise ValueError(f"unknown decoder {role} {value!r}; valid: {', '.join(BACKENDS)}")
    # Ignored when zxing is not used (backend "zbar" without a zxing fallback): they are on by
    # default, and a ZBar gate must not have to turn them off to start.
    zxing_options = {"try_rotate": try_rotate, "try_invert": try_invert, "try_downscale": try_downscale}

    def make(name: str) -> Decoder:
        return ZxingDecoder(**zxing_options) if name == "zxing" else ZbarDecoder()

    primary = make(backend)
    second: Decoder | None = None
    if fallback is not None and fallback != backend:
        try:
            second = make(fallback)
        except DecoderUnavailable as exc:
            log.warning("decoder fallback %r unavailable, decoding without it: %s", fallback, exc)
    if isinstance(primary, ZxingDecoder) and repair:
        zbar = second if isinstance(second, ZbarDecoder) else None
        return CascadeDecoder(primary, default_attempts(ZxingDecoder(), second, OpenCvDecoder()),
                              max_attempts=max_repairs, wide_attempts=wide_attempts(zbar),
                              small_look=SmallCodeLook(ZxingDecoder(try_invert=try_invert)))
    return primary if second is None else FallbackDecoder(primary, second)


def build_pipeline(
    backend: str = "zxing",
    fallback: str | None = "zbar",
    *,
    try_rotate: bool = False,
    try_invert: bool = True,
    try_downscale: bool = True,
    repair: bool = True,
    max_repairs: int | None = DEFAULT_MAX_REPAIRS,
    presence_gate: bool = True,
    presence_threshold: int = 10,
    decode_every: int = 10,
    track: bool = True,
) -> FramePipeline:
    """What the gate runs per frame: ``build_decoder(...)`` behind a presence gate (unless
    ``presence_gate`` is off; a frame is decoded at least every ``decode_every`` frames) and with
    region tracking (unless ``track`` is off). See FramePipeline."""
    decoder = build_decoder(
        backend, fallback, try_rotate=try_rotate, try_invert=try_invert, try_downscale=try_downscale,
        repair=repair, max_repairs=max_repairs,
    )
    # The tracked region is read with the fast decoder alone: if that fails, the whole frame
    # goes through the cascade, which would otherwise repeat the ladder on the same region.
    region_decoder = ZxingDecoder(try_rotate=try_rotate, try_invert=try_invert, try_downscale=try_downscale) \
        if backend == "zxing" else None
    # Step 4's sweep is ZBar when it is the configured fallback (FramePipeline says why).
    sweep: Decoder | None = None
    if fallback == "zbar" and backend == "zxing" and repair:
        try:
            sweep = ZbarDecoder()
        except DecoderUnavailable:
            sweep = None  # build_decoder has warned already
    return FramePipeline(
        decoder,
        region_decoder=region_decoder,
        sweep=sweep,
        presence=PresenceGate(threshold=presence_threshold, decode_every=decode_every) if presence_gate else None,
        tracker=RegionTracker() if track else None,
    )


def build_photo_decoder() -> PhotoDecoder:
    """What ``qrgate scan`` and ``qrgate verify --image`` read photos with: the cascade with every
    rung of the ladder, then the whole-image passes (decoding/photo.py)."""
    cascade = build_decoder(max_repairs=None)
    assert isinstance(cascade, CascadeDecoder)  # zxing with repair, as build_decoder's defaults say
    try:
        zbar: ZbarDecoder | None = ZbarDecoder()
    except DecoderUnavailable:
        zbar = None
    return PhotoDecoder(cascade, default_passes(zbar))
