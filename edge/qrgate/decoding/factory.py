"""Build the configured decoder: the cascade, or a backend with a whole-frame fallback; and the
per-frame pipeline (presence gate and region tracking) around it."""

from __future__ import annotations

import logging

import zxingcpp

from ..config import LADDER_RUNGS, DecoderConfig
from ..errors import DecoderUnavailable
from .base import Decoder
from .cascade import CascadeDecoder, default_attempts, wide_attempts
from .chain import FallbackDecoder
from .opencv import OpenCvDecoder
from .photo import PhotoDecoder, default_passes
from .pipeline import FramePipeline
from .presence import PresenceGate
from .small_codes import SmallCodeLook, StaticTexture
from .tracking import RegionTracker
from .warped import WarpedGridDecoder
from .zbar import ZbarDecoder
from .zxing import ZxingDecoder

log = logging.getLogger(__name__)

# DecoderConfig (config.py) is the one set of decoder options: the gate's config section, the bench, ``qrgate scan``
# and the tests all build from it, so every default lives once, there.
DEFAULT_OPTIONS = DecoderConfig()


def build_decoder(options: DecoderConfig = DEFAULT_OPTIONS, static_texture: StaticTexture | None = None) -> Decoder:
    """The whole-frame decoder ``options`` describe.

    With zxing as the backend and ``repair`` on, the cascade: zxing on the frame, and on a QR it
    located but could not read, the repair ladder (``max_repairs`` rungs) on that region; the
    ladder's other decoders are the fallback (zbar, unless "none") and OpenCV. Otherwise the
    backend with the fallback behind it on whole frames (FallbackDecoder), unless there is none.

    The ``try_*`` options are zxing-cpp's (ZxingDecoder says what each costs and reads) and
    apply to zxing's whole-frame pass; the ladder's rungs work on a region at one polarity and
    scale and use plain zxing. ZBar has no equivalents, and a ZBar gate ignores them. A missing
    primary library raises DecoderUnavailable; a missing fallback library only loses the
    fallback, with one warning.
    """
    fallback = None if options.fallback == "none" else options.fallback
    primary = _make(options.backend, options)
    second: Decoder | None = None
    if fallback is not None:
        try:
            second = _make(fallback, options)
        except DecoderUnavailable as exc:
            log.warning("decoder fallback %r unavailable, decoding without it: %s", fallback, exc)
    if isinstance(primary, ZxingDecoder) and options.repair:
        zbar = second if isinstance(second, ZbarDecoder) else None
        return CascadeDecoder(primary, default_attempts(ZxingDecoder(), second, OpenCvDecoder(), _histogram_reader(),
                                                        WarpedGridDecoder()),
                              max_attempts=options.max_repairs, wide_attempts=wide_attempts(zbar),
                              small_look=SmallCodeLook(ZxingDecoder(try_invert=options.try_invert)),
                              static_texture=static_texture)
    return primary if second is None else FallbackDecoder(primary, second)


def _histogram_reader() -> ZxingDecoder:
    """The ladder's global-threshold reader: zxing-cpp's GlobalHistogram binariser, with its own
    multi-resolution reading (the smoothed, textured codes it is for read at a lower resolution)."""
    return ZxingDecoder(binarizer=zxingcpp.Binarizer.GlobalHistogram, try_downscale=True)


def _make(name: str, options: DecoderConfig) -> Decoder:
    if name == "zxing":
        return ZxingDecoder(try_rotate=options.try_rotate, try_invert=options.try_invert,
                            try_downscale=options.try_downscale)
    return ZbarDecoder()


def build_pipeline(options: DecoderConfig = DEFAULT_OPTIONS) -> FramePipeline:
    """What the gate runs per frame: ``build_decoder(options)`` behind a presence gate (unless
    ``presence_gate`` is off; a frame is decoded at least every ``decode_every`` frames) and with
    region tracking (unless ``track`` is off). See FramePipeline. ``workers`` is the service's."""
    # The texture ladder's memory of the scene's clutter (small_codes.StaticTexture) is per
    # camera, so per pipeline.
    decoder = build_decoder(options, StaticTexture())
    # The tracked region is read with the fast decoder alone: if that fails, the whole frame
    # goes through the cascade, which would otherwise repeat the ladder on the same region.
    region_decoder = _make("zxing", options) if options.backend == "zxing" else None
    # No sweep (FramePipeline's step 4, ZBar on the whole frame every third frame nothing was
    # read in): since the cascade ladders the code-like texture zxing-cpp does not locate
    # (CascadeDecoder.read_unlocated), with ZBar among the rungs, the sweep read no frame of the
    # bench's at any size (the same rates with it and without), and it cost a ZBar call.
    presence = PresenceGate(threshold=options.presence_threshold, decode_every=options.decode_every)
    return FramePipeline(
        decoder,
        region_decoder=region_decoder,
        presence=presence if options.presence_gate else None,
        tracker=RegionTracker() if options.track else None,
    )


def build_photo_decoder() -> PhotoDecoder:
    """What ``qrgate scan`` and ``qrgate verify --image`` read photos with: the cascade with every
    rung of the ladder, then the whole-image passes (decoding/photo.py)."""
    cascade = build_decoder(DecoderConfig(max_repairs=LADDER_RUNGS))
    assert isinstance(cascade, CascadeDecoder)  # zxing with repair, as build_decoder's defaults say
    try:
        zbar: ZbarDecoder | None = ZbarDecoder()
    except DecoderUnavailable:
        zbar = None
    return PhotoDecoder(cascade, default_passes(zbar))
