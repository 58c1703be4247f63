"""Issuer signing keys: create them, and export what a gate needs to trust them.

An issuer keeps its private key (PEM, mode 0600) and hands gates one of two public forms, both read
by ``qrgate.passes.trust``: a JSON trust entry (qrgate issuers) or, for DCC-style issuers, a
self-signed X.509 signing certificate whose kid is the first 8 bytes of SHA-256 over its DER.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

ALGORITHMS = ("ES256", "PS256", "EdDSA")
RSA_BITS = 2048  # the DCC spec's secondary algorithm: RSASSA-PSS with a 2048-bit modulus

# DCC spec "Key Usage Policy Identifiers": a signing certificate may restrict itself to test (t),
# vaccination (v) or recovery (r) certificates.
DCC_KEY_USAGE_OIDS = {
    "t": ObjectIdentifier("1.3.6.1.4.1.0.1847.2021.1.1"),
    "v": ObjectIdentifier("1.3.6.1.4.1.0.1847.2021.1.2"),
    "r": ObjectIdentifier("1.3.6.1.4.1.0.1847.2021.1.3"),
}


@dataclass(frozen=True)
class IssuerKey:
    """A signing key, its algorithm, its kid and, for DCC-style issuers, its signing certificate."""

    issuer: str
    alg: str  # "ES256" | "PS256" | "EdDSA"
    private_key: PrivateKey
    certificate: x509.Certificate | None = None

    @property
    def kid(self) -> bytes:
        """SHA-256 of the certificate (DCC) or of the SubjectPublicKeyInfo (qrgate), first 8 bytes."""
        if self.certificate is not None:
            return certificate_kid(self.certificate)
        spki = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(spki).digest()[:8]


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "PS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"alg must be one of {', '.join(ALGORITHMS)}, not {alg!r}")


def new_issuer_key(issuer: str, alg: str = "ES256") -> IssuerKey:
    """A fresh key for a qrgate issuer (``issuer`` is the id passes carry in ``iss``, e.g. "VN-HN")."""
    return IssuerKey(issuer=issuer, alg=alg, private_key=generate_private_key(alg))


def new_dcc_issuer_key(
    country: str,
    alg: str = "PS256",
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    common_name: str | None = None,
    dcc_types: Iterable[str] | None = None,
) -> IssuerKey:
    """A fresh key with a self-signed DCC signing certificate for ``country`` (ISO 3166-1 alpha-2).

    ``dcc_types`` (a subset of "v", "t", "r") adds the DCC Extended Key Usages; None signs all types.
    """
    private_key = generate_private_key(alg)
    certificate = self_signed_certificate(
        private_key, country, common_name or f"{country} DSC (qrgate test issuer)",
        not_before=not_before, not_after=not_after, dcc_types=dcc_types,
    )
    return IssuerKey(issuer=country, alg=alg, private_key=private_key, certificate=certificate)


def self_signed_certificate(
    private_key: PrivateKey,
    country: str,
    common_name: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    dcc_types: Iterable[str] | None = None,
) -> x509.Certificate:
    """A self-signed document signer certificate (the DCC spec allows the CSCA and DSC to be one)."""
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    public_key = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if dcc_types is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([DCC_KEY_USAGE_OIDS[t] for t in sorted(set(dcc_types))]), critical=False
        )
    # Ed25519 signs without a separate hash; the others sign the certificate with SHA-256.
    digest = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private_key, digest)


def certificate_kid(certificate: x509.Certificate) -> bytes:
    """The DCC kid of a signing certificate: SHA-256 over its DER encoding, first 8 bytes."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()[:8]


def private_key_pem(key: IssuerKey) -> bytes:
    """PKCS#8 PEM, unencrypted: protect it with file permissions (``write_issuer_files`` uses 0600)."""
    return key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_issuer_key(pem: bytes, issuer: str, certificate: x509.Certificate | None = None) -> IssuerKey:
    """An IssuerKey from a private key PEM written by ``private_key_pem``."""
    private_key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        alg = "ES256"
    elif isinstance(private_key, rsa.RSAPrivateKey):
        alg = "PS256"
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        alg = "EdDSA"
    else:
        raise ValueError(f"unsupported private key type {type(private_key).__name__}")
    return IssuerKey(issuer=issuer, alg=alg, private_key=private_key, certificate=certificate)


def trust_entry(
    key: IssuerKey,
    *,
    formats: Iterable[str] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> dict[str, object]:
    """One entry of a gate's JSON trust file (docs/passes.md, "Trust anchors")."""
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry: dict[str, object] = {
        "kid": base64.b64encode(key.kid).decode("ascii"),
        "alg": key.alg,
        "public_key": public_pem.decode("ascii"),
        "issuer": key.issuer,
    }
    if not_before is not None:
        entry["not_before"] = not_before.isoformat()
    if not_after is not None:
        entry["not_after"] = not_after.isoformat()
    if formats is not None:
        entry["formats"] = sorted(formats)
    return entry


def trust_file(entries: Iterable[dict[str, object]]) -> str:
    return json.dumps({"keys": list(entries)}, indent=2) + "\n"


def write_issuer_files(key: IssuerKey, directory: Path, *, formats: Iterable[str] | None = None) -> dict[str, Path]:
    """Write ``<name>.key`` (private PEM, 0600), ``<name>.trust.json`` and, with a certificate, ``<name>.crt.pem``.

    ``<name>`` is the issuer id with its kid in hex, so several keys of one issuer can sit side by side.
    The private key's ``.key`` suffix is one a gate's trust directory ignores; it belongs on no gate.
    Returns the paths by role: "private_key", "trust", and "certificate" when there is one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{key.issuer}-{key.kid.hex()}"
    paths = {"private_key": directory / f"{name}.key", "trust": directory / f"{name}.trust.json"}
    fd = os.open(paths["private_key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    paths["trust"].write_text(trust_file([trust_entry(key, formats=formats)]))
    if key.certificate is not None:
        paths["certificate"] = directory / f"{name}.crt.pem"
        paths["certificate"].write_bytes(key.certificate.public_bytes(serialization.Encoding.PEM))
    return paths
