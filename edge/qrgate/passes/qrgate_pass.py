"""qrgate's own check-in pass, ``QG1:``: the signed successor of Vietnam's PC-COVID personal QR code.

``QG1:`` + base45( COSE_Sign1( CWT claims ) ), signed ES256 or Ed25519. It has to fit a QR code
printed 3 cm wide, so it carries ids and dates only (about 150 bytes, a version-9 code). It is not
zlib-compressed: a signature and random ids do not compress, and zlib would add 6 bytes.

Claims: 1 iss (issuer id, e.g. "VN-HN"), 2 sub (pseudonymous subject id), 4 exp, 6 iat,
7 cti (pass id, bytes; shown as hex), and -65537 (the first private-use CWT label) for optional
display initials.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import cwt
from .codec import decode_base45
from .cose import Sign1
from .rejection import Rejected
from .revocation import HashType, RevocationIndex, pass_id_hash, signature_hash
from .trust import TrustedKey
from .verdict import Reason

PREFIX = "QG1:"
INITIALS = -65537
MAX_ID_CHARS = 64
MAX_PASS_ID_BYTES = 32
MAX_INITIALS_CHARS = 8


def cose_message(body: str) -> bytes:
    return decode_base45(body)


def read_contents(claims: cwt.Claims, keys: Sequence[TrustedKey]) -> cwt.PassContents:
    """What the gate keeps of a qrgate pass whose signature ``keys`` verified (see ``cose.verifying_keys``)."""
    issuer = cwt.text(claims, cwt.ISS, MAX_ID_CHARS, required=True)
    subject_id = cwt.text(claims, cwt.SUB, MAX_ID_CHARS, required=True)
    initials = cwt.text(claims, INITIALS, MAX_INITIALS_CHARS, required=False)
    pass_id = claims.get(cwt.CTI)
    if not isinstance(pass_id, bytes) or not 0 < len(pass_id) <= MAX_PASS_ID_BYTES:
        raise Rejected(Reason.MALFORMED, "claims")
    issued_at, expires = cwt.validity(claims)
    contents = cwt.PassContents(
        issued_at=issued_at,
        expires=expires,
        issuer=issuer,
        pass_id=pass_id.hex(),
        subject_id=subject_id,
        initials=initials,
        pass_id_bytes=pass_id,
    )
    if not any(key.issuer is None or key.issuer == issuer for key in keys):
        # A key trusted for one issuer must not put passes on another issuer's books. A key the province
        # registered for several issuers (one entry each) may sign for any of them: each entry grants one.
        raise Rejected(Reason.UNKNOWN_ISSUER, "issuer_mismatch")
    return contents


def is_revoked(index: RevocationIndex, sign1: Sign1, contents: cwt.PassContents) -> bool:
    """Whether ``index`` revokes this pass by its pass id or its signature."""
    assert contents.pass_id_bytes is not None  # read_contents always sets it
    return (index.contains(HashType.QRGATE_PASS_ID, pass_id_hash(contents.pass_id_bytes))
            or index.contains(HashType.SIGNATURE, signature_hash(sign1.signature, sign1.alg)))
