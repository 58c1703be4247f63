"""COSE_Sign1 (RFC 9052): read the structure, check the signature.

Written on cbor2 + cryptography rather than pycose: the Sig_structure is four CBOR items and each
algorithm is one ``verify`` call, while pycose (last release 2023) would add oscrypto and a second
CBOR stack to the gate for the three algorithms qrgate accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .algorithms import NAMES
from .codec import MAX_INFLATED_BYTES, decode_cbor
from .rejection import Rejected
from .trust import TrustedKey
from .verdict import Reason

COSE_SIGN1_TAG = 18
CWT_TAG = 61
HEADER_ALG = 1
HEADER_KID = 4
SUPPORTED_ALGORITHMS = frozenset(NAMES)

_SHA256 = hashes.SHA256()
_ES256 = ec.ECDSA(_SHA256)
# RFC 8230 section 2: PS256 uses MGF1 with SHA-256 and a salt as long as the hash (32 bytes).
# Every PS256 vector of the EU DCC test data verifies with exactly that.
_PS256 = padding.PSS(mgf=padding.MGF1(_SHA256), salt_length=padding.PSS.DIGEST_LENGTH)


@dataclass(frozen=True, slots=True)
class Sign1:
    protected: bytes  # the protected header exactly as sent: it is signed as these bytes
    alg: int
    kid: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        """The Sig_structure (RFC 9052 section 4.4) for a Sign1 with no external AAD."""
        return cbor2.dumps(["Signature1", self.protected, b"", self.payload])


def decode_sign1(message: bytes, max_bytes: int = MAX_INFLATED_BYTES) -> Sign1:
    """Read a COSE_Sign1 sent bare, as tag 18, or as CWT tag 61 around tag 18.

    ``alg`` and ``kid`` are taken from the protected header when they are there, else from the
    unprotected one: the DCC spec allows the kid in either, and some issuers send everything unprotected.
    A protected value outranks a different unprotected one. An unprotected ``alg`` cannot be used to
    swap algorithms: every trusted key verifies with exactly one algorithm (see ``verify_signature``).
    ``max_bytes`` bounds the message; only signed lists (``signed_list.py``) raise it above a pass's cap.
    """
    item = decode_cbor(message, max_bytes=max_bytes)
    if isinstance(item, cbor2.CBORTag) and item.tag == CWT_TAG:
        item = item.value
        if not (isinstance(item, cbor2.CBORTag) and item.tag == COSE_SIGN1_TAG):
            raise Rejected(Reason.MALFORMED, "cose_structure")
    if isinstance(item, cbor2.CBORTag) and item.tag == COSE_SIGN1_TAG:
        item = item.value
    # cbor2 decodes what is inside a tag as immutable values: a tuple and frozendicts, not list and dict.
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise Rejected(Reason.MALFORMED, "cose_structure")
    protected, unprotected, payload, signature = item
    if not (isinstance(protected, bytes) and isinstance(unprotected, Mapping)
            and isinstance(payload, bytes) and isinstance(signature, bytes)):
        raise Rejected(Reason.MALFORMED, "cose_structure")  # a nil payload (detached content) lands here too

    protected_map = decode_cbor(protected, "cose_header") if protected else {}
    if not isinstance(protected_map, Mapping):
        raise Rejected(Reason.MALFORMED, "cose_header")
    alg = protected_map.get(HEADER_ALG, unprotected.get(HEADER_ALG))
    if type(alg) not in (int, str):  # absent, or a type COSE does not allow (bool is an int subclass)
        raise Rejected(Reason.MALFORMED, "cose_header")
    if alg not in SUPPORTED_ALGORITHMS:
        raise Rejected(Reason.UNSUPPORTED_ALGORITHM, "alg")
    kid = protected_map.get(HEADER_KID, unprotected.get(HEADER_KID))
    if kid is None:
        raise Rejected(Reason.MALFORMED, "kid")
    if not isinstance(kid, bytes) or not kid:
        raise Rejected(Reason.MALFORMED, "cose_header")
    return Sign1(protected, alg, kid, payload, signature)


def verify_signature(sign1: Sign1, keys: Sequence[TrustedKey]) -> TrustedKey:
    """The first of ``keys`` whose signature over ``sign1`` verifies; ``BAD_SIGNATURE`` if none does.

    Keys share a kid by accident (it is a truncated hash), so each one is tried, as the DCC spec requires.
    A key registered for another algorithm never verifies, so a message cannot pick a weaker use of it.
    For a pass, whose contents each such key may limit, ``verifying_keys`` gives all of them.
    """
    return verifying_keys(sign1, keys, first_only=True)[0]


def verifying_keys(sign1: Sign1, keys: Sequence[TrustedKey], *, first_only: bool = False) -> tuple[TrustedKey, ...]:
    """Every one of ``keys`` whose signature over ``sign1`` verifies (at least one); ``BAD_SIGNATURE`` if none.

    The same public key can be trusted twice under one kid (a DSC in a trust list and again in a key
    file, a certificate re-issued with other limits). Each entry may limit what the key signs (a DSC's
    Extended Key Usage, a qrgate key's issuer), so the caller checks the pass against all of them: stopping
    at the first would let the order of the trust files decide whether a limit holds.
    """
    to_be_signed = sign1.to_be_signed()
    found: list[TrustedKey] = []
    for key in keys:
        if key.alg == sign1.alg and _verifies(key, sign1.signature, to_be_signed):
            found.append(key)
            if first_only:
                break
    if not found:
        raise Rejected(Reason.BAD_SIGNATURE, "signature")
    return tuple(found)


def _verifies(key: TrustedKey, signature: bytes, data: bytes) -> bool:
    # The trust store only holds P-256 keys as ES256, RSA keys as PS256 and Ed25519 keys as EdDSA.
    public_key = key.public_key
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            # COSE sends r || s, 32 bytes each (RFC 9053 section 2.1); cryptography takes DER.
            if len(signature) != 64:
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), data, _ES256)
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, _PS256, _SHA256)
        else:
            public_key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
