"""EU Digital COVID Certificate, ``HC1:``: Vietnam's vaccine passport is one (hcert spec 1.0.5, schema 1.3.0).

``HC1:`` + base45( zlib( COSE_Sign1( CWT claims {1 iss, 4 exp, 6 iat, -260 hcert {1: DCC payload}} ) ) ).
The gate keeps the certificate identifier (``ci``) of the one vaccination, test or recovery entry and
the issuing country; the holder's name and birth date are never read out of the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import cwt
from .codec import decode_base45, has_zlib_header, inflate
from .cose import Sign1
from .rejection import Rejected
from .revocation import HashType, RevocationIndex, country_uci_hash, signature_hash, uci_hash
from .trust import TrustedKey
from .verdict import Reason

PREFIX = "HC1:"
HCERT = -260
EU_DCC_V1 = 1
CERTIFICATE_TYPES = ("v", "t", "r")  # vaccination, test, recovery: exactly one per DCC
MAX_CI_CHARS = 80  # DCC schema 1.3: "ci" maxLength 80
MAX_ISS_CHARS = 64


def cose_message(body: str) -> bytes:
    """The COSE message in the base45 text after the prefix.

    The spec says issuers SHALL compress; an earlier edition told verifiers to proceed without
    inflating when the zlib header is absent, and a COSE message can never look like one, so both are read.
    """
    data = decode_base45(body)
    return inflate(data) if has_zlib_header(data) else data


def hcert_payload(claims: cwt.Claims) -> Mapping[Any, Any]:
    """The DCC payload (``hcert`` claim, key 1): the JSON-schema object, as CBOR."""
    hcert = claims.get(HCERT)
    payload = hcert.get(EU_DCC_V1) if isinstance(hcert, Mapping) else None
    if not isinstance(payload, Mapping):
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    return payload


def read_contents(claims: cwt.Claims, key: TrustedKey) -> cwt.PassContents:
    issued_at = cwt.numeric_date(claims, cwt.IAT)
    expires = cwt.numeric_date(claims, cwt.EXP)
    issuer = cwt.text(claims, cwt.ISS, MAX_ISS_CHARS, required=False)
    payload = hcert_payload(claims)
    types = [t for t in CERTIFICATE_TYPES if t in payload]
    if len(types) != 1:
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    entries = payload[types[0]]
    if not isinstance(entries, (list, tuple)) or len(entries) != 1 or not isinstance(entries[0], Mapping):
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    certificate_id = entries[0].get("ci")
    if not isinstance(certificate_id, str) or not 0 < len(certificate_id) <= MAX_CI_CHARS:
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    if key.dcc_types is not None and types[0] not in key.dcc_types:
        # The signer's certificate limits it to other types: a test centre's key cannot vouch for a vaccination.
        raise Rejected(Reason.UNKNOWN_ISSUER, "key_usage")
    return cwt.PassContents(issued_at=issued_at, expires=expires, issuer=issuer, pass_id=certificate_id)


def is_revoked(index: RevocationIndex, sign1: Sign1, contents: cwt.PassContents) -> bool:
    """Whether ``index`` revokes this DCC by its UCI, its issuing country and UCI, or its signature.

    The country is the ``iss`` claim; a DCC without one cannot match a ``country_uci`` entry.
    """
    uci = contents.pass_id
    assert uci is not None  # read_contents always sets it
    return (index.contains(HashType.UCI, uci_hash(uci))
            or (contents.issuer is not None and index.contains(HashType.COUNTRY_UCI, country_uci_hash(contents.issuer, uci)))
            or index.contains(HashType.SIGNATURE, signature_hash(sign1.signature, sign1.alg)))
