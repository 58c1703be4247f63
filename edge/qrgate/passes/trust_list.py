"""The signed trust list: every issuer key the gate trusts, and the list keys it pins next.

Payload (CBOR map, text keys), inside the envelope of ``signed_list.py``::

    type        "qrgate-trust-list"
    version     int >= 1, newer than the list in force
    issued_at   int, epoch seconds (its age is measured from here)
    expires_at  int, epoch seconds
    keys        array of key entries (at most MAX_KEYS), each a map:
                  kid          bstr (1-32 bytes); required with public_key, must match a certificate's kid
                  alg          "ES256" | "PS256" | "EdDSA"; required with public_key, must match the key
                  public_key   bstr, DER SubjectPublicKeyInfo        } exactly one of the two
                  certificate  bstr, DER X.509 certificate (a DSC)   }
                  issuer       text (1-64), optional: the iss a qrgate pass signed by this key must carry
                  not_before, not_after   int epoch seconds, optional (narrow a certificate's window)
                  formats      array of "dcc" | "qrgate", optional (default: both; a certificate: dcc)
    signers     array of 1-8 bstr, DER SubjectPublicKeyInfo: the list keys the device pins from now on;
                must include the key that signed this list

Any fault in any entry refuses the whole list: a list that parses differently on two gates would be
worse than one that every gate refuses, and the list in force stays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..errors import TrustStoreError
from .algorithms import BY_NAME, NAMES
from .signed_list import (
    ListOutcome,
    ListRefused,
    ListType,
    SignedList,
    SignerKeys,
    check_fields,
    optional_integer,
)
from .trust import TrustedKey, TrustStore, checked_key, pass_formats

MAX_TRUST_LIST_BYTES = 8 * 1024 * 1024  # room for thousands of DSCs of 1-2 KiB
MAX_KEYS = 5_000
MAX_KID_BYTES = 32
MAX_PUBLIC_KEY_BYTES = 2_048  # an RSA-4096 SPKI is 550 bytes
MAX_CERTIFICATE_BYTES = 8_192  # a DSC is 1-2 KiB
MAX_ISSUER_CHARS = 64

_LIST_FIELDS = frozenset({"type", "version", "issued_at", "expires_at", "keys", "signers"})
_KEY_FIELDS = frozenset({"kid", "alg", "public_key", "certificate", "issuer", "not_before", "not_after", "formats"})


@dataclass(frozen=True, slots=True)
class TrustList:
    """A verified trust list, ready to swap in."""

    version: int
    issued_at: int
    expires_at: int
    store: TrustStore
    signers: SignerKeys
    digest: bytes  # SHA-256 of the document as received


def read_trust_list(signed: SignedList) -> TrustList:
    """The trust list in ``signed``; ListRefused (malformed, too_large, signer_not_listed) if it is not one."""
    if signed.type is not ListType.TRUST_LIST:
        raise ListRefused(ListOutcome.WRONG_TYPE, f"type {signed.type}, expected {ListType.TRUST_LIST}")
    payload = signed.payload
    check_fields(payload, _LIST_FIELDS, "trust list")
    entries = payload.get("keys")
    if not isinstance(entries, list):
        raise ListRefused(ListOutcome.MALFORMED, "keys must be an array")
    if len(entries) > MAX_KEYS:
        raise ListRefused(ListOutcome.TOO_LARGE, f"{len(entries)} keys, at most {MAX_KEYS}")
    source = f"trust list v{signed.version}"
    keys = [_key(entry, f"{source}: keys[{index}]") for index, entry in enumerate(entries)]
    try:
        signers = SignerKeys.from_spki_list(payload.get("signers"), f"{source}: signers")
    except TrustStoreError as exc:
        raise ListRefused(ListOutcome.MALFORMED, str(exc)) from None
    if signed.signer not in signers:
        # A list that pinned only keys other than the one that made it could lock every gate out of
        # updates with one typo; requiring the signer keeps a working key pinned (docs/trust.md).
        raise ListRefused(ListOutcome.SIGNER_NOT_LISTED, f"kid {signed.signer.kid.hex()} is not among the list's "
                                                         "signers")
    return TrustList(
        version=signed.version,
        issued_at=signed.issued_at,
        expires_at=signed.expires_at,
        store=TrustStore(keys),
        signers=signers,
        digest=signed.digest,
    )


def _key(entry: Any, where: str) -> TrustedKey:
    if not isinstance(entry, Mapping) or not all(isinstance(name, str) for name in entry):
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: expected a map with text keys")
    check_fields(entry, _KEY_FIELDS, where)
    has_key, has_certificate = entry.get("public_key") is not None, entry.get("certificate") is not None
    if has_key == has_certificate:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: needs exactly one of public_key and certificate")
    try:
        key = _from_certificate(entry, where) if has_certificate else _from_public_key(entry, where)
        formats = pass_formats(entry, where) if entry.get("formats") is not None else key.formats
    except TrustStoreError as exc:
        raise ListRefused(ListOutcome.MALFORMED, str(exc)) from None
    issuer = entry.get("issuer")
    if issuer is not None and not (isinstance(issuer, str) and 0 < len(issuer) <= MAX_ISSUER_CHARS):
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: issuer must be text of 1 to {MAX_ISSUER_CHARS} characters")
    not_before = _later(key.not_before, optional_integer(entry, "not_before", where=f"{where}: "))
    not_after = _earlier(key.not_after, optional_integer(entry, "not_after", where=f"{where}: "))
    if not_before is not None and not_after is not None and not_after < not_before:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: not_after is before not_before")
    return dataclasses.replace(
        key, issuer=issuer if issuer is not None else key.issuer, not_before=not_before, not_after=not_after,
        formats=formats
    )


def _from_public_key(entry: Mapping[str, Any], where: str) -> TrustedKey:
    kid, alg_name, der = entry.get("kid"), entry.get("alg"), entry.get("public_key")
    if not isinstance(kid, bytes) or not 0 < len(kid) <= MAX_KID_BYTES:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: kid must be 1 to {MAX_KID_BYTES} bytes")
    if alg_name not in BY_NAME:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: alg must be one of {', '.join(BY_NAME)}")
    if not isinstance(der, bytes) or len(der) > MAX_PUBLIC_KEY_BYTES:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: public_key must be a DER SPKI of at most "
                                                 f"{MAX_PUBLIC_KEY_BYTES} bytes")
    try:
        public_key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ListRefused(ListOutcome.MALFORMED,
                          f"{where}: public_key is not a DER SubjectPublicKeyInfo: {exc}") from None
    alg, public_key = checked_key(public_key, where)
    if alg != BY_NAME[alg_name]:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: alg {alg_name} does not match the public key (a "
                                                 f"{NAMES[alg]} key)")
    return TrustedKey(kid=kid, alg=alg, public_key=public_key, source=where)


def _from_certificate(entry: Mapping[str, Any], where: str) -> TrustedKey:
    der = entry.get("certificate")
    if not isinstance(der, bytes) or len(der) > MAX_CERTIFICATE_BYTES:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: certificate must be DER of at most {MAX_CERTIFICATE_BYTES} "
                                                 "bytes")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: not a DER X.509 certificate: {exc}") from None
    key = TrustedKey.from_certificate(certificate, where)
    kid, alg_name = entry.get("kid"), entry.get("alg")
    if kid is not None and kid != key.kid:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: kid does not match the certificate's (SHA-256 of its DER, "
                                                 "first 8 bytes)")
    if alg_name is not None and BY_NAME.get(alg_name) != key.alg:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: alg {alg_name!r} does not match the certificate's key")
    return key


def _later(a: float | None, b: int | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _earlier(a: float | None, b: int | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)

