"""The outcome of verifying one QR text: accepted, or rejected with one named reason."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    ACCEPTED = "accepted"
    NOT_A_PASS = "not_a_pass"  # readable text, but no known pass prefix (a URL, a product code)
    MALFORMED = "malformed"  # a known prefix, but the encoding/compression/CBOR/COSE is broken or hostile
    UNKNOWN_ISSUER = "unknown_issuer"  # no trusted key for the kid
    BAD_SIGNATURE = "bad_signature"  # a trusted key exists for the kid, but no such key verifies it
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    REVOKED = "revoked"  # signature and contents hold, but a signed revocation list names the pass
    TRUST_STALE = "trust_stale"  # would be accepted, but the trust list is too old and the policy is "refuse"
    # Depended on the wall clock, which nothing vouches for ("refuse" policy).
    CLOCK_UNSYNCHRONISED = "clock_unsynchronised"
    UNSIGNED_PASS = "unsigned_pass"  # a chip ID card (CCCD) QR while the CCCD policy is off: nothing proves it
    IDENTIFIED = "identified"  # a CCCD QR admitted by policy: the person is identified, the card not verified
    # A DCC that is genuine and in force, refused by the province's validation rules (a signed rule set,
    # qrgate.rules): each rule names the reason it gives when it fails.
    TEST_POSITIVE = "test_positive"  # the test result is "detected"
    TEST_TOO_OLD = "test_too_old"  # the sample was taken longer ago than the policy allows for its test type
    TEST_NOT_ACCEPTED = "test_not_accepted"  # a test type (or device) the policy does not accept
    VACCINATION_INCOMPLETE = "vaccination_incomplete"  # fewer doses than the series (dn < sd)
    VACCINATION_NOT_YET_VALID = "vaccination_not_yet_valid"  # the last dose is too recent to count yet
    VACCINATION_EXPIRED = "vaccination_expired"  # the last dose is older than the accepted window
    PRODUCT_NOT_ACCEPTED = "product_not_accepted"  # a vaccine product the policy does not approve
    RECOVERY_NOT_YET_VALID = "recovery_not_yet_valid"  # before the recovery certificate's df
    RECOVERY_EXPIRED = "recovery_expired"  # past du, or longer ago than the policy accepts
    CERTIFICATE_TYPE_NOT_ACCEPTED = "certificate_type_not_accepted"  # the policy accepts no certificate of this type
    RULE_FAILED = "rule_failed"  # a validation rule without a more specific reason failed (detail: its id)


class PassFormat(enum.StrEnum):
    DCC = "dcc"  # EU Digital COVID Certificate, "HC1:" (Vietnam's vaccine passport is one)
    QRGATE = "qrgate"  # qrgate's own check-in pass
    CCCD = "cccd"  # Vietnam's chip citizen ID card QR: unsigned text, read only under an explicit policy
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gate decides about one QR text.

    Personal data stays out of this object except the pseudonymous ``subject_id`` of a valid qrgate
    pass; the DCC holder's name and date of birth are never copied here.
    """

    reason: Reason
    format: PassFormat = PassFormat.UNKNOWN
    issuer: str | None = None
    kid: str | None = None  # base64 of the key identifier, as DCC trust lists print it
    pass_id: str | None = None  # qrgate pass id, or the DCC certificate identifier (UCI)
    subject_id: str | None = None  # only set when accepted
    expires: int | None = None  # epoch seconds
    initials: str | None = None  # display initials of a qrgate pass, only set when accepted
    detail: str | None = None  # which step failed, for technicians ("base45", "zlib", "cbor", ...); never personal data
    trust_stale: bool = False  # the signed trust list in force was stale when this pass was verified
    rules_version: int | None = None  # the validation rule set that judged this DCC; None: no rules applied
    rules_read_clock: bool = False  # the rules' verdict compared the certificate's dates with the wall clock

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.ACCEPTED
