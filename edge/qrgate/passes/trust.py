"""Trust anchors: the issuer public keys the gate accepts, looked up by key id (kid).

Two file formats, in any mix (docs/passes.md has both with examples):

- X.509 signing certificates, PEM (one or more per file) or DER, as EU DCC document signer
  certificates (DSCs) are published. kid = the first 8 bytes of SHA-256 over the DER certificate,
  as the DCC spec defines it; the validity window is the certificate's; an Extended Key Usage with the
  DCC OIDs limits which certificate types (vaccination, test, recovery) the key may sign; the subject's
  country (C) is the issuing country when a pass's ``iss`` claim is not a country code.
- JSON key files ``{"keys": [{"kid", "alg", "public_key", "issuer", "not_before", "not_after", "formats"}]}``.

Loading reads everything once at start-up and fails loudly (``TrustStoreError`` naming the file):
a gate that silently trusts fewer issuers than its technician configured would turn visitors away.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ..errors import TrustStoreError
from .algorithms import BY_NAME, EDDSA, ES256, NAMES, PS256
from .verdict import PassFormat

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

MAX_TRUST_FILE_BYTES = 1024 * 1024  # a published DSC list of a whole country is ~200 KiB
MIN_RSA_BITS = 2048
CERTIFICATE_SUFFIXES = frozenset((".pem", ".crt", ".cer", ".der"))
KEY_FILE_SUFFIX = ".json"
ALL_PASS_FORMATS = frozenset((PassFormat.DCC, PassFormat.QRGATE))

# DCC spec, "Key Usage Policy Identifiers": a DSC whose Extended Key Usage lists some of these may only
# sign the listed certificate types; a DSC with none of them (no EKU, an EKU of other purposes only, or an
# empty EKU) may sign all three. Some issuers use the arc without the ".0" (1.3.6.1.4.1.1847...), which
# verifiers accept as the same.
DCC_KEY_USAGE = {
    "1.3.6.1.4.1.0.1847.2021.1.1": "t",
    "1.3.6.1.4.1.0.1847.2021.1.2": "v",
    "1.3.6.1.4.1.0.1847.2021.1.3": "r",
    "1.3.6.1.4.1.1847.2021.1.1": "t",
    "1.3.6.1.4.1.1847.2021.1.2": "v",
    "1.3.6.1.4.1.1847.2021.1.3": "r",
}
EXTENDED_KEY_USAGE_OID = "2.5.29.37"
COUNTRY_CODE = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2, as DCC issuers write it (Greece: "EL")


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One issuer public key, with what it may sign and when."""

    kid: bytes
    alg: int  # the COSE algorithm this key verifies; a message naming another one does not verify
    public_key: PublicKey
    source: str  # the file it came from, for technicians
    issuer: str | None = None  # for qrgate passes: the ``iss`` a pass signed by this key must carry
    not_before: float | None = None  # epoch seconds; outside the window the key is not trusted
    not_after: float | None = None
    formats: frozenset[PassFormat] = ALL_PASS_FORMATS
    dcc_types: frozenset[str] | None = None  # DCC types ("v", "t", "r") it may sign; None: all
    country: str | None = None  # a DSC's subject country: the issuing country of the DCCs it signs

    def usable(self, pass_format: PassFormat, at: float) -> bool:
        """Whether this key may vouch for a pass of ``pass_format`` at time ``at``."""
        return (
            pass_format in self.formats
            and (self.not_before is None or at >= self.not_before)
            and (self.not_after is None or at <= self.not_after)
        )

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate, source: str) -> TrustedKey:
        """A DCC document signer certificate as a trusted key; raises TrustStoreError if unusable."""
        der = certificate.public_bytes(serialization.Encoding.DER)
        try:
            alg, public_key = checked_key(certificate.public_key(), source)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise TrustStoreError(f"{source}: certificate public key cannot be read: {exc}") from exc
        return cls(
            kid=hashlib.sha256(der).digest()[:8],
            alg=alg,
            public_key=public_key,
            source=source,
            not_before=certificate.not_valid_before_utc.timestamp(),
            not_after=certificate.not_valid_after_utc.timestamp(),
            formats=frozenset((PassFormat.DCC,)),
            dcc_types=dcc_key_usage(der, source),
            country=subject_country(certificate),
        )


def dcc_key_usage(der: bytes, source: str) -> frozenset[str] | None:
    """The DCC types (``v``, ``t``, ``r``) the certificate's Extended Key Usage allows; None: all of them.

    Read from the DER with asn1crypto, not through cryptography's parsed extensions: cryptography refuses
    the whole extension list when the EKU is an empty SEQUENCE (RFC 5280 wants at least one purpose), and
    DSCs like that exist (the EU test set's CO15). Under the DCC rules an EKU naming no DCC type restricts
    nothing, so refusing the certificate would turn away every visitor it signed. Two EKU extensions are
    refused: which one limits the key would depend on the reader.
    """
    try:
        extensions = asn1_x509.Certificate.load(der)["tbs_certificate"]["extensions"]
        found = [ext for ext in extensions if ext["extn_id"].dotted == EXTENDED_KEY_USAGE_OID] if extensions else []
        if len(found) > 1:
            raise TrustStoreError(f"{source}: certificate has {len(found)} Extended Key Usage extensions")
        if not found:
            return None
        purposes = [purpose.dotted for purpose in found[0]["extn_value"].parsed]
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto's answers to DER it cannot read
        raise TrustStoreError(f"{source}: certificate Extended Key Usage cannot be read: {exc}") from exc
    types = frozenset(DCC_KEY_USAGE[oid] for oid in purposes if oid in DCC_KEY_USAGE)
    return types or None


def subject_country(certificate: x509.Certificate) -> str | None:
    """The certificate subject's one country code (C), upper case; None if it has none, several or a bad one."""
    try:
        values = [str(attribute.value).upper() for attribute in
                  certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)]
    except ValueError:
        return None
    return values[0] if len(values) == 1 and COUNTRY_CODE.fullmatch(values[0]) else None


class TrustStore:
    """The trusted keys, indexed by kid. Immutable after construction; safe to share between threads."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        by_kid: dict[bytes, list[TrustedKey]] = {}
        for key in keys:
            by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Load every trust file in ``paths`` (files, or directories read one level deep).

        In a directory, ``.pem``/``.crt``/``.cer``/``.der`` files are certificates and ``.json`` files
        are key files; other files (a README) are ignored. A path named explicitly must be one of those.
        """
        keys: list[TrustedKey] = []
        for path in map(Path, paths):
            for file in _trust_files(path):
                keys.extend(_load_file(file))
        return cls(keys)

    def keys_for(self, kid: bytes) -> tuple[TrustedKey, ...]:
        """Every key with this kid (several can share one: it is a truncated hash)."""
        return self._by_kid.get(kid, ())

    def __len__(self) -> int:
        return sum(map(len, self._by_kid.values()))

    def __iter__(self) -> Iterator[TrustedKey]:
        for keys in self._by_kid.values():
            yield from keys


def _trust_files(path: Path) -> list[Path]:
    try:
        if path.is_dir():
            return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                          and p.suffix.lower() in CERTIFICATE_SUFFIXES | {KEY_FILE_SUFFIX})
    except OSError as exc:
        raise TrustStoreError(f"{path}: cannot list: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise TrustStoreError(f"{path}: no such file or directory")
    return [path]


def _load_file(path: Path) -> list[TrustedKey]:
    suffix = path.suffix.lower()
    if suffix != KEY_FILE_SUFFIX and suffix not in CERTIFICATE_SUFFIXES:
        raise TrustStoreError(f"{path}: not a trust file (expected {', '.join(sorted(CERTIFICATE_SUFFIXES))} or .json)")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TRUST_FILE_BYTES + 1)
    except OSError as exc:
        raise TrustStoreError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise TrustStoreError(f"{path}: larger than {MAX_TRUST_FILE_BYTES} bytes")
    if suffix == KEY_FILE_SUFFIX:
        return _keys_from_json(data, str(path))
    return [TrustedKey.from_certificate(cert, str(path)) for cert in _certificates(data, str(path))]


def _certificates(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise TrustStoreError(f"{source}: not an X.509 certificate in PEM or DER: {exc}") from exc


def _keys_from_json(data: bytes, source: str) -> list[TrustedKey]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustStoreError(f"{source}: not valid JSON: {exc}") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TrustStoreError(f'{source}: expected an object with a "keys" list')
    return [_key_from_entry(entry, f"{source}: keys[{index}]") for index, entry in enumerate(entries)]


def _key_from_entry(entry: Any, where: str) -> TrustedKey:
    if not isinstance(entry, dict):
        raise TrustStoreError(f"{where}: expected an object")
    unknown = set(entry) - {"kid", "alg", "public_key", "issuer", "not_before", "not_after", "formats"}
    if unknown:
        raise TrustStoreError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    kid = _kid(_required_str(entry, "kid", where), where)
    alg_name = _required_str(entry, "alg", where)
    if alg_name not in BY_NAME:
        raise TrustStoreError(f"{where}: alg must be one of {', '.join(BY_NAME)}, not {alg_name!r}")
    try:
        public_key = serialization.load_pem_public_key(_required_str(entry, "public_key", where).encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TrustStoreError(f"{where}: public_key is not a PEM SubjectPublicKeyInfo: {exc}") from exc
    alg, public_key = checked_key(public_key, where)
    if alg != BY_NAME[alg_name]:
        raise TrustStoreError(f"{where}: alg {alg_name} does not match the public key (a {NAMES[alg]} key)")
    issuer = entry.get("issuer")
    if issuer is not None and not (isinstance(issuer, str) and issuer):
        raise TrustStoreError(f"{where}: issuer must be a non-empty string")
    not_before = _instant(entry, "not_before", where)
    not_after = _instant(entry, "not_after", where)
    if not_before is not None and not_after is not None and not_after < not_before:
        raise TrustStoreError(f"{where}: not_after is before not_before")
    return TrustedKey(
        kid=kid,
        alg=alg,
        public_key=public_key,
        source=where,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        formats=pass_formats(entry, where),
    )


def _required_str(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise TrustStoreError(f"{where}: {name} must be a non-empty string")
    return value


def _kid(text: str, where: str) -> bytes:
    try:
        kid = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TrustStoreError(f"{where}: kid is not base64: {text!r}") from exc
    if not kid:
        raise TrustStoreError(f"{where}: kid is empty")
    return kid


def _instant(entry: Mapping[str, Any], name: str, where: str) -> float | None:
    """An ISO 8601 date or date-time as epoch seconds; one without a zone is UTC."""
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TrustStoreError(f"{where}: {name} must be an ISO 8601 string")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError as exc:
        raise TrustStoreError(f"{where}: {name} is not ISO 8601: {value!r}") from exc
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    seconds = instant.timestamp()
    if not math.isfinite(seconds):
        raise TrustStoreError(f"{where}: {name} is out of range: {value!r}")
    return seconds


def pass_formats(entry: Mapping[str, Any], where: str) -> frozenset[PassFormat]:
    names = entry.get("formats")
    if names is None:
        return ALL_PASS_FORMATS
    valid = {str(f) for f in ALL_PASS_FORMATS}
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in valid for n in names):
        raise TrustStoreError(f"{where}: formats must be a non-empty list of {', '.join(sorted(valid))}")
    return frozenset(PassFormat(n) for n in names)


def checked_key(public_key: object, where: str) -> tuple[int, PublicKey]:
    """The COSE algorithm a key of this type verifies in qrgate, and the key; refuses every other key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise TrustStoreError(f"{where}: EC key on {public_key.curve.name}; only P-256 (ES256) is accepted")
        return ES256, public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise TrustStoreError(f"{where}: RSA key of {public_key.key_size} bits; at least {MIN_RSA_BITS} needed")
        return PS256, public_key
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return EDDSA, public_key
    raise TrustStoreError(f"{where}: unsupported key type {type(public_key).__name__}")
