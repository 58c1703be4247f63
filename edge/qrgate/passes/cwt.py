"""CBOR Web Token claims (RFC 8392) as both pass formats use them, and the time check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
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

# The range a pass's iat and exp must fall in. Neither format existed before 2020 and no health or check-in
# pass is issued for centuries; a date outside says the issuer's software is broken, and refusing it keeps
# every later step (comparisons, ISO dates on a report or a printed card, datetime's years 1-9999) total.
MIN_NUMERIC_DATE = 946_684_800  # 2000-01-01T00:00:00Z
MAX_NUMERIC_DATE = 7_258_118_400  # 2200-01-01T00:00:00Z


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
    revocation_ids: tuple[str, ...] = ()  # a DCC's every UCI (a vaccination series lists one per dose)
    # The normalised DCC payload for the validation rules (qrgate.passes.dcc.normalised_payload). It holds
    # the holder's name and birth date: it lives only while the verifier judges the pass, is never copied
    # into a Verdict, and is kept out of repr so that no log line can show it.
    dcc_payload: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


def decode_claims(payload: bytes) -> Claims:
    claims = decode_cbor(payload, "claims")
    if not isinstance(claims, Mapping):
        raise Rejected(Reason.MALFORMED, "claims")
    return claims


def numeric_date(claims: Claims, label: int) -> int:
    """A required NumericDate claim (integer or finite float seconds since the epoch) in the sane range."""
    value = claims.get(label)
    if type(value) is float and math.isfinite(value):
        value = math.floor(value)
    if type(value) is not int or not MIN_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE:  # type(): True is an int
        raise Rejected(Reason.MALFORMED, "claims")
    return value


def validity(claims: Claims) -> tuple[int, int]:
    """``(iat, exp)``: both required, in range, and issued no later than it expires.

    A pass that expires before it was issued was never valid: only the clock-skew tolerance on both ends
    could make it look in force, so it is refused here, before any clock is read.
    """
    issued_at, expires = numeric_date(claims, IAT), numeric_date(claims, EXP)
    if issued_at > expires:
        raise Rejected(Reason.MALFORMED, "claims")
    return issued_at, expires


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
