"""Build the configured decoder: a backend, optionally backed by a fallback."""

from __future__ import annotations

import logging

from ..errors import DecoderUnavailable
from .base import Decoder
from .chain import FallbackDecoder
from .zbar import ZbarDecoder
from .zxing import ZxingDecoder

log = logging.getLogger(__name__)

BACKENDS = ("zxing", "zbar")


def build_decoder(
    backend: str = "zxing",
    fallback: str | None = "zbar",
    *,
    try_rotate: bool = False,
    try_invert: bool = False,
    try_downscale: bool = False,
) -> Decoder:
    """The decoder for ``backend``, with ``fallback`` behind it unless None or the same backend.

    The ``try_*`` flags are zxing-cpp options and apply wherever zxing is used; ZBar has no
    equivalents. A missing primary library raises DecoderUnavailable; a missing fallback library
    only loses the fallback, with one warning.
    """
    for role, value in (("backend", backend), ("fallback", fallback)):
        if value is not None and value not in BACKENDS:
            raise ValueError(f"unknown decoder {role} {value!r}; valid: {', '.join(BACKENDS)}")
    zxing_options = {"try_rotate": try_rotate, "try_invert": try_invert, "try_downscale": try_downscale}
    if backend == "zbar" and fallback != "zxing" and any(zxing_options.values()):
        enabled = ", ".join(k for k, v in zxing_options.items() if v)
        raise ValueError(f"{enabled}: zxing-cpp options, but zxing is not used (backend 'zbar', no zxing fallback)")

    def make(name: str) -> Decoder:
        return ZxingDecoder(**zxing_options) if name == "zxing" else ZbarDecoder()

    primary = make(backend)
    if fallback is None or fallback == backend:
        return primary
    try:
        second = make(fallback)
    except DecoderUnavailable as exc:
        log.warning("decoder fallback %r unavailable, decoding with %r alone: %s", fallback, backend, exc)
        return primary
    return FallbackDecoder(primary, second)
