"""Mint signed passes: qrgate ``QG1:`` check-in passes and EU DCC ``HC1:`` certificates.

The wire constants (claim labels, prefixes, algorithm ids) come from ``qrgate.passes``, so issuer and
gate cannot drift apart; the signing itself lives only here, the gate only ever verifies.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, Literal

import base45
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from qrgate.passes import cwt, dcc, qrgate_pass
from qrgate.passes.algorithms import BY_NAME
from qrgate.passes.cose import COSE_SIGN1_TAG, HEADER_ALG, HEADER_KID

from .keys import IssuerKey, PrivateKey, certificate_kid

KidPlacement = Literal["protected", "unprotected"]


def sign1(key: IssuerKey, payload: bytes, *, kid: bytes, kid_in: KidPlacement = "protected") -> bytes:
    """A tagged COSE_Sign1 (RFC 9052) over ``payload``; ``alg`` is always in the protected header."""
    protected: dict[int, Any] = {HEADER_ALG: BY_NAME[key.alg]}
    unprotected: dict[int, Any] = {}
    (protected if kid_in == "protected" else unprotected)[HEADER_KID] = kid
    protected_bytes = cbor2.dumps(protected)
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
    signature = _sign(key.private_key, to_be_signed)
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, unprotected, payload, signature]))


def _sign(private_key: PrivateKey, data: bytes) -> bytes:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # COSE: fixed-width r || s, not DER
    if isinstance(private_key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        return private_key.sign(data, pss, hashes.SHA256())
    return private_key.sign(data)


def mint_qrgate_pass(
    key: IssuerKey,
    issuer: str,
    pass_id: bytes,
    subject_id: str,
    iat: int,
    exp: int,
    initials: str | None = None,
) -> str:
    """A ``QG1:`` pass text. ``key`` must be ES256 or EdDSA: an RSA signature alone would not fit 3 cm."""
    if key.alg not in ("ES256", "EdDSA"):
        raise ValueError(f"qrgate passes are signed ES256 or EdDSA, not {key.alg}")
    claims: dict[int, Any] = {
        cwt.ISS: issuer,
        cwt.SUB: subject_id,
        cwt.EXP: exp,
        cwt.IAT: iat,
        cwt.CTI: pass_id,
    }
    if initials is not None:
        claims[qrgate_pass.INITIALS] = initials
    message = sign1(key, cbor2.dumps(claims), kid=key.kid)
    return qrgate_pass.PREFIX + bytes(base45.b45encode(message)).decode("ascii")


def mint_dcc_pass(
    key: IssuerKey,
    cert: x509.Certificate,
    payload_claims: Mapping[str, Any],
    iat: int,
    exp: int,
    kid_in: KidPlacement = "protected",
    *,
    issuer: str | None = None,
) -> str:
    """An ``HC1:`` text carrying the DCC payload ``payload_claims``, signed by ``key``.

    The kid is ``cert``'s; signing with a key that is not the certificate's yields a forged pass.
    ``issuer`` (the ``iss`` claim) defaults to the certificate's country.
    """
    if issuer is None:
        countries = cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
        issuer = str(countries[0].value) if countries else None
    claims: dict[int, Any] = {cwt.IAT: iat, cwt.EXP: exp, dcc.HCERT: {dcc.EU_DCC_V1: dict(payload_claims)}}
    if issuer is not None:
        claims[cwt.ISS] = issuer
    message = sign1(key, cbor2.dumps(claims), kid=certificate_kid(cert), kid_in=kid_in)
    return dcc.PREFIX + bytes(base45.b45encode(zlib.compress(message, 9))).decode("ascii")
