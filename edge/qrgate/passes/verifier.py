"""One QR text in, one Verdict out: offline, bounded, and never an exception for bad input.

Each format is the same pipeline: prefix, transport decoding, COSE_Sign1, trusted key by kid,
signature, then (only once the signature holds) the claims, revocation and the validity window; a DCC
that is genuine, unrevoked and in force then meets the validation rules in force, if any (a positive
test or dose 1 of 2 is genuine and still red). What is trusted comes from a ``TrustAuthority``: static
anchors, or signed lists swapped in while running, and the rule set beside them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import cwt, dcc, qrgate_pass
from .authority import StalePolicy, TrustAuthority, TrustState
from .cccd import CCCD_OFF, CccdPolicy, read_cccd
from .codec import MAX_TEXT_CHARS
from .cose import Sign1, decode_sign1, verifying_keys
from .rejection import Rejected
from .revocation import RevocationIndex
from .trust import TrustedKey, TrustStore
from .verdict import PassFormat, Reason, Verdict

DEFAULT_CLOCK_SKEW_S = 300  # a Pi without RTC or network drifts; five minutes either way is tolerated


@dataclass(frozen=True, slots=True)
class _Format:
    prefix: str
    format: PassFormat
    cose_message: Callable[[str], bytes]  # the text after the prefix -> COSE bytes
    read_contents: Callable[[cwt.Claims, Sequence[TrustedKey]], cwt.PassContents]
    is_revoked: Callable[[RevocationIndex, Sign1, cwt.PassContents], bool]


_FORMATS = (
    _Format(dcc.PREFIX, PassFormat.DCC, dcc.cose_message, dcc.read_contents, dcc.is_revoked),
    _Format(qrgate_pass.PREFIX, PassFormat.QRGATE, qrgate_pass.cose_message, qrgate_pass.read_contents,
            qrgate_pass.is_revoked),
)


class PassVerifier:
    """Verifies pass texts against what a ``TrustAuthority`` trusts at that moment. Safe to share between threads.

    ``trust`` is a ``TrustAuthority`` (signed lists that change while running) or a plain ``TrustStore``
    (fixed anchors). ``max_age_s`` and ``stale_policy`` say what a stale signed trust list means
    (``TrustState.is_stale``): with FLAG every verdict on a pass carries ``trust_stale=True``; with
    REFUSE a pass that would be accepted is rejected as ``trust_stale`` instead (and flagged too).
    The validation rules are the state's too (``TrustState.rules``; ``TrustAuthority.of_store(store, rules)``
    for fixed anchors): a DCC they refuse gets the failing rule's reason, and its Identifier as ``detail``.
    """

    def __init__(
        self,
        trust: TrustStore | TrustAuthority,
        clock_skew_s: int = DEFAULT_CLOCK_SKEW_S,
        *,
        max_age_s: float | None = None,
        stale_policy: StalePolicy | str = StalePolicy.FLAG,
        cccd: CccdPolicy = CCCD_OFF,
    ) -> None:
        self._authority = trust if isinstance(trust, TrustAuthority) else TrustAuthority.of_store(trust)
        self._clock_skew_s = clock_skew_s
        self._cccd = cccd
        self._max_age_s = max_age_s
        self._refuse_stale = StalePolicy(stale_policy) is StalePolicy.REFUSE

    def verify(self, text: str, at: float) -> Verdict:
        """The verdict on ``text`` at ``at`` (epoch seconds). Never raises for any text."""
        for spec in _FORMATS:
            if text.startswith(spec.prefix):
                return self._verify(spec, text, at, self._authority.state)
        card = read_cccd(text, self._cccd)
        if card is not None:
            if card.identified:
                return Verdict(Reason.IDENTIFIED, PassFormat.CCCD, subject_id=card.subject_hash)
            return Verdict(card.outcome, PassFormat.CCCD, detail=card.detail)
        return Verdict(Reason.NOT_A_PASS)

    def _verify(self, spec: _Format, text: str, at: float, state: TrustState) -> Verdict:
        kid: str | None = None
        stale = state.is_stale(at, self._max_age_s)
        try:
            if len(text) > MAX_TEXT_CHARS:
                raise Rejected(Reason.MALFORMED, "length")
            sign1 = decode_sign1(spec.cose_message(text[len(spec.prefix):]))
            kid = base64.b64encode(sign1.kid).decode("ascii")
            keys = verifying_keys(sign1, self._trusted_keys(state.store, sign1.kid, spec.format, at))
            contents = spec.read_contents(cwt.decode_claims(sign1.payload), keys)
        except Rejected as rejected:
            return Verdict(rejected.reason, spec.format, kid=kid, detail=rejected.detail, trust_stale=stale)
        rules_version, rules_read_clock = None, False
        detail: str | None
        if state.revoked and spec.is_revoked(state.revoked, sign1, contents):
            # Revoked outranks the dates: the issuer withdrew this pass whatever its validity window says.
            reason, detail = Reason.REVOKED, "revocation_list"
        else:
            reason = cwt.time_verdict(contents.issued_at, contents.expires, at, self._clock_skew_s)
            detail = None if reason is Reason.ACCEPTED else ("iat" if reason is Reason.NOT_YET_VALID else "exp")
            if reason is Reason.ACCEPTED and state.rules is not None and contents.dcc_payload is not None:
                # The payload (name and birth date included) is read here and goes no further: the
                # verdict keeps the failing rule's id, never a field of the certificate.
                outcome = state.rules.judge(contents.dcc_payload, at=at, iat=contents.issued_at,
                                            exp=contents.expires, country=contents.issuer)
                reason, detail = outcome.reason, outcome.rule_id
                rules_version, rules_read_clock = state.rules.version, outcome.depends_on_clock
            if reason is Reason.ACCEPTED and stale and self._refuse_stale:
                reason, detail = Reason.TRUST_STALE, "trust_list_age"
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
            detail=detail,
            trust_stale=stale,
            rules_version=rules_version,
            rules_read_clock=rules_read_clock,
        )

    def _trusted_keys(
        self, store: TrustStore, kid: bytes, pass_format: PassFormat, at: float
    ) -> tuple[TrustedKey, ...]:
        keys = store.keys_for(kid)
        if not keys:
            raise Rejected(Reason.UNKNOWN_ISSUER, "kid")
        usable = tuple(key for key in keys if key.usable(pass_format, at))
        if not usable:
            # Known, but outside its validity window or not trusted for this format: not trusted now.
            raise Rejected(Reason.UNKNOWN_ISSUER, "key_not_valid")
        return usable
