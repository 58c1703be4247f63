"""Signed lists (trust lists, revocation lists, rule sets): a CBOR map in a COSE_Sign1, signed by a pinned list key.

The envelope is the passes' own COSE_Sign1 (``cose.py``): the same decoder and the same signature
check, with bounds sized for a list instead of a QR code. The payload is a CBOR map with text keys;
every list carries ``type``, ``version`` (a positive integer, monotonic per type), ``issued_at`` and
``expires_at`` (epoch seconds). What else it carries is read by ``trust_list.py``, ``revocation.py`` and
``qrgate/rules/rule_set.py``.

Which keys may sign is the device's decision (``SignerKeys``): pinned at provisioning as PEM public
keys, then rotated only by trust lists that those keys signed (docs/trust.md, "Rotating the list key").
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import TrustStoreError
from .algorithms import EDDSA, ES256, NAMES
from .codec import decode_cbor
from .cose import decode_sign1, verify_signature
from .rejection import Rejected
from .trust import TrustedKey, checked_key

MAX_SIGNERS = 8  # pinned list keys at once; a rotation needs two
MAX_SIGNER_KEY_BYTES = 256  # a P-256 SubjectPublicKeyInfo is 91 bytes, an Ed25519 one 44
MAX_SIGNER_FILE_BYTES = 16 * 1024
MAX_VERSION = 2**63 - 1


class ListType(enum.StrEnum):
    TRUST_LIST = "qrgate-trust-list"
    REVOCATION = "qrgate-revocation"
    RULE_SET = "qrgate-rule-set"  # the province's validation rules (qrgate/rules/rule_set.py)


_LIST_TYPES = frozenset(t.value for t in ListType)


class ListOutcome(enum.StrEnum):
    """What the device did with one offered list document."""

    ACCEPTED = "accepted"
    UNCHANGED = "unchanged"  # the very document in force, offered again (a retained message after a reconnect)
    TOO_LARGE = "too_large"  # larger than the bound for its type, before or after decoding
    MALFORMED = "malformed"  # not a COSE_Sign1 over a well-formed list of a known shape
    WRONG_TYPE = "wrong_type"  # a list of another type than the delivery path carries
    UNKNOWN_SIGNER = "unknown_signer"  # the kid names no pinned list key
    BAD_SIGNATURE = "bad_signature"  # a pinned key has that kid, but the signature does not verify
    SIGNER_NOT_LISTED = "signer_not_listed"  # a trust list must name its own signer among the next signers
    ROLLBACK = "rollback"  # the version is not newer than the one in force
    EXPIRED = "expired"  # expires_at has passed
    BASE_MISMATCH = "base_mismatch"  # a revocation delta for another base version: the device needs a snapshot


class ListRefused(Exception):
    """Raised while reading an offered list; the store turns it into its answer and keeps what is in force."""

    def __init__(self, outcome: ListOutcome, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SignerKey:
    """One list-signing public key: ES256 (P-256) or Ed25519. Its kid is SHA-256 over the SPKI, first 8 bytes."""

    spki: bytes  # DER SubjectPublicKeyInfo: the form lists and the device's pin file carry
    trusted: TrustedKey  # the same key in the form ``cose.verify_signature`` takes

    @property
    def kid(self) -> bytes:
        return self.trusted.kid

    @classmethod
    def from_public_key(cls, public_key: object, source: str) -> SignerKey:
        """Raises TrustStoreError for anything but a P-256 or Ed25519 key."""
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
            raise TrustStoreError(f"{source}: a list signing key must be ES256 (P-256) or Ed25519")
        alg, checked = checked_key(public_key, source)
        spki = checked.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = hashlib.sha256(spki).digest()[:8]
        return cls(spki, TrustedKey(kid=kid, alg=alg, public_key=checked, source=source))

    @classmethod
    def from_spki(cls, der: bytes, source: str) -> SignerKey:
        if not isinstance(der, bytes) or not 0 < len(der) <= MAX_SIGNER_KEY_BYTES:
            raise TrustStoreError(f"{source}: a signer key must be a DER SubjectPublicKeyInfo of at most "
                                  f"{MAX_SIGNER_KEY_BYTES} bytes")
        try:
            public_key = serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise TrustStoreError(f"{source}: not a DER SubjectPublicKeyInfo: {exc}") from exc
        return cls.from_public_key(public_key, source)

    @property
    def alg_name(self) -> str:
        return NAMES[self.trusted.alg]


class SignerKeys:
    """A set of list-signing keys, looked up by kid. Immutable; equal when the keys are.

    What comes from outside (a trust list's ``signers``, the provisioning directory) holds at most
    ``MAX_SIGNERS``; a union made on the device (pinned and retired keys) may hold more.
    """

    def __init__(self, keys: Iterable[SignerKey] = ()) -> None:
        unique: dict[bytes, SignerKey] = {}
        for key in keys:
            unique.setdefault(key.spki, key)
        self._keys = tuple(unique.values())
        by_kid: dict[bytes, list[TrustedKey]] = {}
        for key in self._keys:
            by_kid.setdefault(key.kid, []).append(key.trusted)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}

    @classmethod
    def from_pem_dir(cls, directory: str | Path) -> SignerKeys:
        """Every ``*.pem`` public key in ``directory`` (the provisioning pins); TrustStoreError if none or any is
        bad."""
        directory = Path(directory)
        try:
            files = sorted(p for p in directory.iterdir()
                           if p.is_file() and p.suffix == ".pem" and not p.name.startswith("."))
        except OSError as exc:
            raise TrustStoreError(
                f"{directory}: cannot list the trust-list signer keys: {exc.strerror or exc}") from exc
        keys = []
        for path in files:
            try:
                with path.open("rb") as f:
                    pem = f.read(MAX_SIGNER_FILE_BYTES + 1)
            except OSError as exc:
                raise TrustStoreError(f"{path}: cannot read: {exc.strerror or exc}") from exc
            if len(pem) > MAX_SIGNER_FILE_BYTES:
                raise TrustStoreError(f"{path}: larger than {MAX_SIGNER_FILE_BYTES} bytes")
            try:
                public_key = serialization.load_pem_public_key(pem)
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise TrustStoreError(f"{path}: not a PEM public key: {exc}") from exc
            keys.append(SignerKey.from_public_key(public_key, str(path)))
        if not keys:
            raise TrustStoreError(f"{directory}: no trust-list signer public key (*.pem)")
        if len(keys) > MAX_SIGNERS:
            raise TrustStoreError(f"{directory}: more than {MAX_SIGNERS} signer keys")
        return cls(keys)

    @classmethod
    def from_spki_list(cls, items: Any, source: str) -> SignerKeys:
        """A non-empty CBOR array of DER SPKIs, as a trust list's ``signers`` and the pin file carry them."""
        if not isinstance(items, (list, tuple)) or not 0 < len(items) <= MAX_SIGNERS:
            raise TrustStoreError(f"{source}: expected 1 to {MAX_SIGNERS} signer keys")
        return cls(SignerKey.from_spki(der, f"{source}[{index}]") for index, der in enumerate(items))

    def keys_for(self, kid: bytes) -> tuple[TrustedKey, ...]:
        return self._by_kid.get(kid, ())

    def spki_list(self) -> list[bytes]:
        return [key.spki for key in self._keys]

    def __or__(self, other: SignerKeys) -> SignerKeys:
        return SignerKeys((*self._keys, *other._keys))

    def __sub__(self, other: SignerKeys) -> SignerKeys:
        return SignerKeys(key for key in self._keys if key not in other)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, SignerKey) and any(mine.spki == key.spki for mine in self._keys)

    def __iter__(self) -> Iterator[SignerKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SignerKeys) and {k.spki for k in self._keys} == {k.spki for k in other._keys}

    def __hash__(self) -> int:
        return hash(frozenset(k.spki for k in self._keys))

    def __str__(self) -> str:
        """The keys as logs and technicians see them: ``ES256:<kid hex>, EdDSA:<kid hex>``."""
        return ", ".join(f"{k.alg_name}:{k.kid.hex()}" for k in self._keys) or "none"

    def __repr__(self) -> str:
        return f"SignerKeys({self})"


@dataclass(frozen=True, slots=True)
class SignedList:
    """A list whose signature verified against a pinned key, and its common fields; the rest is in ``payload``."""

    type: ListType
    version: int
    issued_at: int
    expires_at: int
    payload: Mapping[str, Any]
    signer: SignerKey
    digest: bytes  # SHA-256 of the document exactly as offered: tells a re-delivery from a new list


def open_signed_list(document: bytes, signers: SignerKeys, max_bytes: int) -> SignedList:
    """Verify ``document`` against ``signers`` and read its common fields; ListRefused says why not.

    ``max_bytes`` is the cap of the list type the caller expects (each type's module defines it).
    The signature is checked before the payload is decoded: a document no pinned key signed is
    refused before any of its list content is looked at.
    """
    if len(document) > max_bytes:
        raise ListRefused(ListOutcome.TOO_LARGE, f"{len(document)} bytes, at most {max_bytes}")
    try:
        sign1 = decode_sign1(document, max_bytes=max_bytes)
    except Rejected as rejected:
        raise ListRefused(ListOutcome.MALFORMED, rejected.detail) from None
    if sign1.alg not in (ES256, EDDSA):
        raise ListRefused(ListOutcome.MALFORMED, f"alg {sign1.alg}: lists are signed ES256 or EdDSA")
    keys = signers.keys_for(sign1.kid)
    if not keys:
        raise ListRefused(ListOutcome.UNKNOWN_SIGNER, f"kid {sign1.kid.hex()} is not a pinned list key")
    try:
        trusted = verify_signature(sign1, keys)
    except Rejected:
        raise ListRefused(ListOutcome.BAD_SIGNATURE, f"kid {sign1.kid.hex()}") from None
    signer = next(key for key in signers if key.trusted is trusted)
    try:
        payload = decode_cbor(sign1.payload, "list_payload", max_bytes=max_bytes)
    except Rejected as rejected:
        raise ListRefused(ListOutcome.MALFORMED, rejected.detail) from None
    if not isinstance(payload, Mapping) or not all(isinstance(key, str) for key in payload):
        raise ListRefused(ListOutcome.MALFORMED, "payload is not a map with text keys")
    list_type = payload.get("type")
    if not isinstance(list_type, str) or list_type not in _LIST_TYPES:
        raise ListRefused(ListOutcome.WRONG_TYPE, f"type {list_type!r}")
    version = integer(payload, "version", minimum=1)
    issued_at = integer(payload, "issued_at")
    expires_at = integer(payload, "expires_at")
    if expires_at <= issued_at:
        raise ListRefused(ListOutcome.MALFORMED, "expires_at is not after issued_at")
    return SignedList(
        type=ListType(list_type),
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        payload=payload,
        signer=signer,
        digest=hashlib.sha256(document).digest(),
    )


def integer(payload: Mapping[str, Any], name: str, *, minimum: int = 0, where: str = "") -> int:
    """A required integer field (epoch seconds, versions) from ``minimum`` to 2^63-1.

    bool is refused although Python counts it as an int; so are floats: every time in a list is whole seconds.
    """
    value = payload.get(name)
    if type(value) is not int or not minimum <= value <= MAX_VERSION:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}{name} must be an integer from {minimum} to 2^63-1")
    return value


def optional_integer(payload: Mapping[str, Any], name: str, *, where: str = "") -> int | None:
    return None if payload.get(name) is None else integer(payload, name, where=where)


def check_fields(payload: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Unknown fields are refused: a field an older gate would ignore could be a restriction it must not miss."""
    unknown = set(payload) - allowed
    if unknown:
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
