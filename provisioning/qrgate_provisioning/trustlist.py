"""Build and sign the province's lists for its gates: the trust list, revocation snapshots and deltas, rule sets.

The formats are defined by the gate (``qrgate.passes.trust_list``, ``qrgate.passes.revocation``,
``qrgate.rules.rule_set``, envelope in ``qrgate.passes.signed_list``); this module writes them, signs them with
a list key (ES256 or Ed25519, a COSE_Sign1 made by ``mint.sign1``), and reads each one back with the gate's
own code before returning it, so the issuer cannot publish a list that every gate would refuse.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from qrgate.errors import TrustStoreError
from qrgate.passes import dcc, qrgate_pass
from qrgate.passes.algorithms import NAMES
from qrgate.passes.codec import decode_cbor
from qrgate.passes.cose import decode_sign1
from qrgate.passes.cwt import CTI, ISS, decode_claims
from qrgate.passes.rejection import Rejected
from qrgate.passes.revocation import (
    EMPTY_INDEX,
    HASH_BYTES,
    MAX_REVOCATION_BYTES,
    HashType,
    RevocationList,
    country_uci_hash,
    pass_id_hash,
    read_revocation_list,
    signature_hash,
    uci_hash,
)
from qrgate.passes.signed_list import ListRefused, ListType, SignerKey, SignerKeys, open_signed_list
from qrgate.passes.trust import CERTIFICATE_SUFFIXES, KEY_FILE_SUFFIX, TrustedKey, TrustStore
from qrgate.passes.trust_list import MAX_TRUST_LIST_BYTES, read_trust_list
from qrgate.rules.rule_set import MAX_RULE_SET_DOCUMENT_BYTES, read_rule_set

from .keys import IssuerKey, generate_private_key, load_issuer_key, private_key_pem
from .mint import sign1

LIST_SIGNER_ALGORITHMS = ("ES256", "EdDSA")
LIST_SIGNER_NAME = "trust-list"  # the IssuerKey.issuer of a list key; it signs lists, never passes
_MAX_LIST_BYTES = max(MAX_TRUST_LIST_BYTES, MAX_REVOCATION_BYTES)
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


# --- list keys -------------------------------------------------------------------------------------------------


def new_list_signer(alg: str = "EdDSA") -> IssuerKey:
    """A fresh list-signing key (the province keeps it offline; gates pin its public key)."""
    if alg not in LIST_SIGNER_ALGORITHMS:
        raise ValueError(f"a list key is {' or '.join(LIST_SIGNER_ALGORITHMS)}, not {alg}")
    return IssuerKey(issuer=LIST_SIGNER_NAME, alg=alg, private_key=generate_private_key(alg))


def load_list_signer(path: str | Path) -> IssuerKey:
    """A list key's private PEM (unencrypted PKCS#8, as ``write_list_signer`` writes it); ValueError otherwise."""
    try:
        key = load_issuer_key(Path(path).read_bytes(), LIST_SIGNER_NAME)
    except (TypeError, UnsupportedAlgorithm) as exc:  # encrypted, or a key type cryptography cannot load
        raise ValueError(f"{path}: not an unencrypted private key: {exc}") from None
    if key.alg not in LIST_SIGNER_ALGORITHMS:
        raise ValueError(f"{path}: a list key is {' or '.join(LIST_SIGNER_ALGORITHMS)}, not {key.alg}")
    return key


def public_pem(key: IssuerKey) -> bytes:
    """The PEM public key a gate pins (a file in its trust-list signer directory)."""
    return key.private_key.public_key().public_bytes(serialization.Encoding.PEM, _SPKI)


def spki(key: IssuerKey) -> bytes:
    return key.private_key.public_key().public_bytes(serialization.Encoding.DER, _SPKI)


def load_public_spki(path: str | Path) -> bytes:
    """A PEM public key file as DER SubjectPublicKeyInfo; ValueError unless it is a valid list key."""
    try:
        public_key = serialization.load_pem_public_key(Path(path).read_bytes())
        return SignerKey.from_public_key(public_key, str(path)).spki
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"{path}: {exc}") from None
    except TrustStoreError as exc:
        raise ValueError(str(exc)) from None


def write_list_signer(key: IssuerKey, directory: Path) -> dict[str, Path]:
    """``list-<kid>.key`` (private PEM, 0600) and ``list-<kid>.pem`` (the public key gates pin)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"list-{key.kid.hex()}"
    paths = {"private_key": directory / f"{name}.key", "public_key": directory / f"{name}.pem"}
    fd = os.open(paths["private_key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    paths["public_key"].write_bytes(public_pem(key))
    return paths


# --- the trust list --------------------------------------------------------------------------------------------


def key_entry(key: TrustedKey) -> dict[str, Any]:
    """A trust-list entry for a key given by its public key (a qrgate issuer, or a JSON trust file's key)."""
    entry: dict[str, Any] = {
        "kid": key.kid,
        "alg": NAMES[key.alg],
        "public_key": key.public_key.public_bytes(serialization.Encoding.DER, _SPKI),
        "formats": sorted(str(f) for f in key.formats),
    }
    if key.issuer is not None:
        entry["issuer"] = key.issuer
    if key.not_before is not None:
        entry["not_before"] = int(key.not_before)
    if key.not_after is not None:
        entry["not_after"] = int(key.not_after)
    return entry


def certificate_entry(certificate: x509.Certificate) -> dict[str, Any]:
    """A trust-list entry for a DCC signing certificate: the gate takes kid, window and usage from it."""
    return {"certificate": certificate.public_bytes(serialization.Encoding.DER)}


def entries_from_paths(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Trust-list entries for every trust file in ``paths``, read as a gate reads ``trust.paths``.

    Certificates (.pem, .crt, .cer, .der) become certificate entries; JSON key files key entries.
    """
    entries: list[dict[str, Any]] = []
    for path in map(Path, paths):
        files = (sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
                 if path.is_dir() else [path])
        for file in files:
            suffix = file.suffix.lower()
            if suffix in CERTIFICATE_SUFFIXES:
                data = file.read_bytes()
                certificates = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                                else [x509.load_der_x509_certificate(data)])
                entries.extend(certificate_entry(c) for c in certificates)
            elif suffix == KEY_FILE_SUFFIX:
                entries.extend(key_entry(key) for key in TrustStore.from_paths([file]))
            elif not path.is_dir():
                raise ValueError(f"{file}: not a trust file (a certificate or a .json key file)")
    return entries


def build_trust_list(
    signer: IssuerKey,
    entries: Sequence[Mapping[str, Any]],
    *,
    version: int,
    issued_at: int,
    expires_at: int,
    next_signers: Iterable[bytes] = (),
) -> bytes:
    """The signed trust list. Its ``signers`` are ``signer`` itself and ``next_signers`` (DER SPKIs).

    To rotate the list key: first a list signed by the old key naming the new one (``next_signers``),
    later lists signed by the new key alone (docs/trust.md). ValueError if a gate would refuse the list.
    """
    signers = [spki(signer)]
    signers += [der for der in next_signers if der not in signers]
    payload = {
        "type": str(ListType.TRUST_LIST),
        "version": version,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "keys": [dict(entry) for entry in entries],
        "signers": signers,
    }
    document = _signed(signer, payload)
    _check(lambda: read_trust_list(open_signed_list(document, _signer_keys(signer), MAX_TRUST_LIST_BYTES)))
    return document


# --- revocation lists ------------------------------------------------------------------------------------------

Hashes = Mapping[HashType, Iterable[bytes]]


def build_revocation_snapshot(signer: IssuerKey, entries: Hashes, *, version: int, issued_at: int,
                              expires_at: int) -> bytes:
    """A signed full revocation list: every revoked hash, per hash type (16 bytes each)."""
    payload = {
        "type": str(ListType.REVOCATION),
        "version": version,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "kind": "snapshot",
        "entries": _hash_map(entries),
    }
    document = _signed(signer, payload)
    _check(lambda: read_revocation_list(open_signed_list(document, _signer_keys(signer), MAX_REVOCATION_BYTES), None))
    return document


def build_revocation_delta(
    signer: IssuerKey,
    *,
    base_version: int,
    add: Hashes,
    remove: Hashes,
    version: int,
    issued_at: int,
    expires_at: int,
) -> bytes:
    """A signed delta: what to add to and remove from the list of version ``base_version``."""
    payload = {
        "type": str(ListType.REVOCATION),
        "version": version,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "kind": "delta",
        "base_version": base_version,
        "add": _hash_map(add),
        "remove": _hash_map(remove),
    }
    if version <= base_version:
        raise ValueError(f"a delta's version ({version}) must be newer than its base ({base_version})")
    document = _signed(signer, payload)
    base = RevocationList(base_version, issued_at, expires_at, b"", EMPTY_INDEX)
    _check(lambda: read_revocation_list(open_signed_list(document, _signer_keys(signer), MAX_REVOCATION_BYTES), base))
    return document


def pass_hashes(text: str) -> dict[HashType, bytes]:
    """Every revocation hash of one pass text (``HC1:`` or ``QG1:``), to revoke exactly that pass.

    The pass is decoded, not verified: the issuer revokes what it issued and knows to be its own.
    ValueError if the text is not a readable pass.
    """
    try:
        if text.startswith(dcc.PREFIX):
            sign1 = decode_sign1(dcc.cose_message(text[len(dcc.PREFIX):]))
            claims = decode_claims(sign1.payload)
            payload = dcc.hcert_payload(claims)
            # The gate's own reading (null groups absent, the latest dose of a series, the issuing
            # country only when iss is one): a hash it would not compute would revoke nothing.
            kind = dcc.certificate_type(payload)
            uci = dcc.chosen_entry(kind, payload[kind]).get("ci")
            if not isinstance(uci, str) or not uci:
                raise ValueError("not a readable pass (no certificate identifier)")
            hashes = {HashType.UCI: uci_hash(uci), HashType.SIGNATURE: signature_hash(sign1.signature, sign1.alg)}
            country = dcc.issuing_country(claims.get(ISS))
            if country is not None:
                hashes[HashType.COUNTRY_UCI] = country_uci_hash(country, uci)
            return hashes
        if text.startswith(qrgate_pass.PREFIX):
            sign1 = decode_sign1(qrgate_pass.cose_message(text[len(qrgate_pass.PREFIX):]))
            pass_id = decode_claims(sign1.payload)[CTI]
            return {HashType.QRGATE_PASS_ID: pass_id_hash(pass_id),
                    HashType.SIGNATURE: signature_hash(sign1.signature, sign1.alg)}
    except Rejected as rejected:
        raise ValueError(f"not a readable pass ({rejected.detail})") from None
    except (StopIteration, LookupError, TypeError, AttributeError):
        raise ValueError("not a readable pass (no certificate identifier or pass id)") from None
    raise ValueError("not an HC1: or QG1: pass")


# --- rule sets ----------------------------------------------------------------------------------------------------


def build_rule_set(signer: IssuerKey, content: str, *, version: int, issued_at: int, expires_at: int) -> bytes:
    """The signed rule set: ``content`` is the rule set's JSON text (as ``qrgate/data/rules-vn-2021.json``),
    signed exactly as written. ValueError if a gate would refuse it (every rule's Logic is validated)."""
    payload = {
        "type": str(ListType.RULE_SET),
        "version": version,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "content": content,
    }
    document = _signed(signer, payload)
    _check(lambda: read_rule_set(open_signed_list(document, _signer_keys(signer), MAX_RULE_SET_DOCUMENT_BYTES)))
    return document


# --- reading a list back (for publishing) --------------------------------------------------------------------------


def describe_list(document: bytes) -> dict[str, Any]:
    """``type``, ``version``, ``kind`` (revocation) of a list, read without verifying it: to route and name it.

    ValueError if it is not a qrgate list.
    """
    try:
        payload = decode_cbor(decode_sign1(document, max_bytes=_MAX_LIST_BYTES).payload, "list_payload",
                              max_bytes=_MAX_LIST_BYTES)
    except Rejected as rejected:
        raise ValueError(f"not a signed qrgate list ({rejected.detail})") from None
    if (not isinstance(payload, Mapping) or payload.get("type") not in {str(t) for t in ListType}
            or type(payload.get("version")) is not int):
        raise ValueError("not a qrgate trust list, revocation list or rule set")
    return {"type": ListType(payload["type"]), "version": payload["version"], "kind": payload.get("kind")}


# --- helpers ------------------------------------------------------------------------------------------------------


def _signed(signer: IssuerKey, payload: Mapping[str, Any]) -> bytes:
    if signer.alg not in LIST_SIGNER_ALGORITHMS:
        raise ValueError(f"lists are signed {' or '.join(LIST_SIGNER_ALGORITHMS)}, not {signer.alg}")
    # The kid is the one the gate computes for a pinned key (SHA-256 over the SPKI, first 8 bytes),
    # whatever certificate the IssuerKey may carry.
    return sign1(signer, cbor2.dumps(payload), kid=_signer_key(signer).kid)


def _signer_key(signer: IssuerKey) -> SignerKey:
    return SignerKey.from_spki(spki(signer), "signer")


def _signer_keys(signer: IssuerKey) -> SignerKeys:
    return SignerKeys([_signer_key(signer)])


def _check(read: Callable[[], object]) -> None:
    try:
        read()
    except ListRefused as refused:
        raise ValueError(f"a gate would refuse this list: {refused.outcome}: {refused.detail}") from None


def _hash_map(hashes: Hashes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for hash_type, given in hashes.items():
        values = list(given)
        if any(len(v) != HASH_BYTES for v in values):
            raise ValueError(f"{hash_type}: every hash is {HASH_BYTES} bytes")
        if values:
            out[str(HashType(hash_type))] = b"".join(values)
    return out
