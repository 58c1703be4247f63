"""CBOR Web Token claims (RFC 8392) as both pass formats use them, and the time check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codec import decode_cbor
from .rejection import Rejected
from .verdict import Reason

ISS = 1
SUB = 2
EXP = 4
IAT = 6
CTI = 7

Claims = Mapping[Any, Any]


@dataclass(frozen=True, slots=True)
class PassContents:
    """What the gate takes from a verified pass; everything else in it (a DCC's name, birth date) stays there."""

    issued_at: int
    expires: int
    issuer: str | None = None
    pass_id: str | None = None
    subject_id: str | None = None
    initials: str | None = None
    pass_id_bytes: bytes | None = None  # a qrgate pass id as signed, for its revocation hash


def decode_claims(payload: bytes) -> Claims:
    claims = decode_cbor(payload, "claims")
    if not isinstance(claims, Mapping):
        raise Rejected(Reason.MALFORMED, "claims")
    return claims


def numeric_date(claims: Claims, label: int) -> int:
    """A required NumericDate claim (integer or finite float seconds since the epoch)."""
    value = claims.get(label)
    if type(value) is int:  # not isinstance: True is an int
        return value
    if type(value) is float and math.isfinite(value):
        return math.floor(value)
    raise Rejected(Reason.MALFORMED, "claims")


def text(claims: Claims, label: int, max_chars: int, *, required: bool) -> str | None:
    value = claims.get(label)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise Rejected(Reason.MALFORMED, "claims")
    return value


def time_verdict(issued_at: int, expires: int, at: float, clock_skew_s: float) -> Reason:
    """ACCEPTED, NOT_YET_VALID or EXPIRED at ``at``, tolerating a gate clock off by ``clock_skew_s``.

    A pass is valid from ``iat`` to ``exp`` inclusive (RFC 8392: reject *after* exp).
    """
    if at + clock_skew_s < issued_at:
        return Reason.NOT_YET_VALID
    if at - clock_skew_s > expires:
        return Reason.EXPIRED
    return Reason.ACCEPTED
