"""One QR text in, one Verdict out: offline, bounded, and never an exception for bad input.

Each format is the same pipeline: prefix, transport decoding, COSE_Sign1, trusted key by kid,
signature, then (only once the signature holds) the claims and the validity window.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from . import cwt, dcc, qrgate_pass
from .codec import MAX_TEXT_CHARS
from .cose import decode_sign1, verify_signature
from .rejection import Rejected
from .trust import TrustedKey, TrustStore
from .verdict import PassFormat, Reason, Verdict

DEFAULT_CLOCK_SKEW_S = 300  # a Pi without RTC or network drifts; five minutes either way is tolerated


@dataclass(frozen=True, slots=True)
class _Format:
    prefix: str
    format: PassFormat
    cose_message: Callable[[str], bytes]  # the text after the prefix -> COSE bytes
    read_contents: Callable[[cwt.Claims, TrustedKey], cwt.PassContents]


_FORMATS = (
    _Format(dcc.PREFIX, PassFormat.DCC, dcc.cose_message, dcc.read_contents),
    _Format(qrgate_pass.PREFIX, PassFormat.QRGATE, qrgate_pass.cose_message, qrgate_pass.read_contents),
)


class PassVerifier:
    """Verifies pass texts against a trust store. Stateless between calls; safe to share between threads."""

    def __init__(self, trust: TrustStore, clock_skew_s: int = DEFAULT_CLOCK_SKEW_S) -> None:
        self._trust = trust
        self._clock_skew_s = clock_skew_s

    def verify(self, text: str, at: float) -> Verdict:
        """The verdict on ``text`` at ``at`` (epoch seconds). Never raises for any text."""
        for spec in _FORMATS:
            if text.startswith(spec.prefix):
                return self._verify(spec, text, at)
        return Verdict(Reason.NOT_A_PASS)

    def _verify(self, spec: _Format, text: str, at: float) -> Verdict:
        kid: str | None = None
        try:
            if len(text) > MAX_TEXT_CHARS:
                raise Rejected(Reason.MALFORMED, "length")
            sign1 = decode_sign1(spec.cose_message(text[len(spec.prefix):]))
            kid = base64.b64encode(sign1.kid).decode("ascii")
            key = verify_signature(sign1, self._trusted_keys(sign1.kid, spec.format, at))
            contents = spec.read_contents(cwt.decode_claims(sign1.payload), key)
        except Rejected as rejected:
            return Verdict(rejected.reason, spec.format, kid=kid, detail=rejected.detail)
        reason = cwt.time_verdict(contents.issued_at, contents.expires, at, self._clock_skew_s)
        accepted = reason is Reason.ACCEPTED
        return Verdict(
            reason,
            spec.format,
            issuer=contents.issuer,
            kid=kid,
            pass_id=contents.pass_id,
            subject_id=contents.subject_id if accepted else None,
            expires=contents.expires,
            initials=contents.initials if accepted else None,
            detail=None if accepted else ("iat" if reason is Reason.NOT_YET_VALID else "exp"),
        )

    def _trusted_keys(self, kid: bytes, pass_format: PassFormat, at: float) -> tuple[TrustedKey, ...]:
        keys = self._trust.keys_for(kid)
        if not keys:
            raise Rejected(Reason.UNKNOWN_ISSUER, "kid")
        usable = tuple(key for key in keys if key.usable(pass_format, at))
        if not usable:
            # Known, but outside its validity window or not trusted for this format: not trusted now.
            raise Rejected(Reason.UNKNOWN_ISSUER, "key_not_valid")
        return usable
