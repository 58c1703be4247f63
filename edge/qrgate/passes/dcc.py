"""EU Digital COVID Certificate, ``HC1:``: Vietnam's vaccine passport is one (hcert spec 1.0.5, schema 1.0-1.3).

``HC1:`` + base45( zlib( COSE_Sign1( CWT claims {1 iss, 4 exp, 6 iat, -260 hcert {1: DCC payload}} ) ) ).
The gate keeps the certificate identifier (``ci``) of the vaccination, test or recovery entry the verdict
is about and the issuing country; the holder's name and birth date are never read out of the payload.

Real issuers wrote the payload in more shapes than schema 1.3 allows. Once the signature holds, what
the verdict does not depend on is read leniently (a ``null`` group, an ``iss`` that is a ministry's name,
a date-time where a date is specified); what it depends on (which type, which entry, its UCI, the
signer's key usage, iat/exp) is read strictly, and a doubt there refuses the pass as malformed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import cwt
from .codec import decode_base45, has_zlib_header, inflate
from .cose import Sign1
from .rejection import Rejected
from .revocation import HashType, RevocationIndex, country_uci_hash, signature_hash, uci_hash
from .trust import COUNTRY_CODE, TrustedKey
from .verdict import Reason

PREFIX = "HC1:"
HCERT = -260
EU_DCC_V1 = 1
CERTIFICATE_TYPES = ("v", "t", "r")  # vaccination, test, recovery: exactly one per DCC
MAX_CI_CHARS = 80  # DCC schema 1.3: "ci" maxLength 80
MAX_VACCINATION_ENTRIES = 16  # a whole series listed (primary doses and boosters) is a handful of entries
MAX_DOSE_NUMBER = 99  # schema 1.3: dn 1..9; a bound, not a policy, so that a later schema still reads
_DATE_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_DATE_CHARS = 40  # "2021-06-01T10:00:00.000000+01:00" is 32


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


def certificate_type(payload: Mapping[Any, Any]) -> str:
    """The one type (``v``, ``t`` or ``r``) whose group holds entries.

    Schema 1.0.x issuers wrote ``"t": null, "r": null`` beside the ``v`` they meant, and an empty list says
    the same: neither holds an entry the verdict could be about, so both count as absent. Two groups with
    entries are refused: the pass would be judged as one type and could be either.
    """
    present = [kind for kind in CERTIFICATE_TYPES if _has_entries(payload.get(kind))]
    if len(present) != 1:
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    return present[0]


def _has_entries(group: object) -> bool:
    return group is not None and not (isinstance(group, (list, tuple)) and not group)


def chosen_entry(kind: str, entries: object) -> Mapping[Any, Any]:
    """The entry of group ``kind`` that the verdict is about.

    A test or recovery certificate holds exactly one entry: two tests or two recoveries in one pass have
    no agreed meaning (which result counts?), so they are refused. A vaccination group may list the whole
    series (dose 1, dose 2, a booster): the holder's status is the one their latest dose gives, so the
    verdict is about the entry with the highest dose number ``dn`` (a booster outranks the primary series
    whatever the dates say), and among equal ``dn`` the latest ``dt`` (a corrected record of the same dose).
    Every entry must then give a readable ``dn`` and ``dt``, since the choice depends on all of them, and
    two different entries that tie are refused as ambiguous.
    """
    if not isinstance(entries, (list, tuple)) or not all(isinstance(entry, Mapping) for entry in entries):
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    limit = MAX_VACCINATION_ENTRIES if kind == "v" else 1
    if not 0 < len(entries) <= limit:
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    chosen: Mapping[Any, Any]
    if len(entries) == 1:
        chosen = entries[0]
        return chosen
    ranked = sorted(((_dose_rank(entry), index) for index, entry in enumerate(entries)), reverse=True)
    (best_rank, best), (next_rank, runner_up) = ranked[0], ranked[1]
    if best_rank == next_rank and entries[best] != entries[runner_up]:
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    chosen = entries[best]
    return chosen


def _dose_rank(entry: Mapping[Any, Any]) -> tuple[int, dt.datetime]:
    dose = entry.get("dn")
    given_at = dcc_instant(entry.get("dt"))
    if type(dose) is not int or not 0 < dose <= MAX_DOSE_NUMBER or given_at is None:
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    return dose, given_at


def dcc_instant(value: object) -> dt.datetime | None:
    """A DCC date (``2021-06-01``), or the date-time that some issuers wrote where a date is specified
    (``2021-06-01T10:00:00Z``, or with no zone: read as UTC), as an aware datetime; None if it is neither."""
    if not isinstance(value, str) or len(value) > _MAX_DATE_CHARS or not _DATE_PREFIX.match(value):
        return None
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=dt.UTC)


def normalised_payload(payload: Mapping[Any, Any], kind: str, entry: Mapping[Any, Any]) -> dict[Any, Any]:
    """The payload the validation rules read: the absent groups dropped, and ``kind`` holding only ``entry``.

    Everything else is left as the issuer wrote it (dates as their strings: the rule engine reads them), so
    a rule judges exactly the entry the verdict is about, and never a ``null`` group or an earlier dose.
    """
    normalised = {key: value for key, value in payload.items() if key not in CERTIFICATE_TYPES}
    normalised[kind] = [entry]
    return normalised


def issuing_country(iss: object, keys: Sequence[TrustedKey] = ()) -> str | None:
    """The issuing country's code: ``iss`` when it is one, else the signing certificate's country.

    Some issuers put a ministry's name in ``iss``. The verdict does not depend on it, so such a pass is not
    refused; but only a country code is kept (for the event and the revocation hash), never the free text.
    """
    if isinstance(iss, str) and len(iss) == 2 and COUNTRY_CODE.fullmatch(iss.upper()):
        return iss.upper()
    countries = {key.country for key in keys if key.country is not None}
    return countries.pop() if len(countries) == 1 else None


def check_key_usage(kind: str, keys: Sequence[TrustedKey]) -> None:
    """Refuse a type that any of the verifying keys' certificates excludes (DCC Extended Key Usage).

    When one public key is trusted under several entries, the strictest holds: a DSC's EKU is its issuer's
    statement that the key must not sign other types, and an entry that says nothing does not undo it.
    """
    if any(key.dcc_types is not None and kind not in key.dcc_types for key in keys):
        # A test centre's key cannot vouch for a vaccination.
        raise Rejected(Reason.UNKNOWN_ISSUER, "key_usage")


def read_contents(claims: cwt.Claims, keys: Sequence[TrustedKey]) -> cwt.PassContents:
    """What the gate keeps of a DCC whose signature ``keys`` verified, with the payload for the rules."""
    issued_at, expires = cwt.validity(claims)
    payload = hcert_payload(claims)
    kind = certificate_type(payload)
    entry = chosen_entry(kind, payload[kind])
    certificate_id = entry.get("ci")
    if not _is_uci(certificate_id):
        raise Rejected(Reason.MALFORMED, "dcc_payload")
    check_key_usage(kind, keys)
    # Every listed dose's UCI can be revoked; the chosen one first, the others as far as they are readable.
    ucis = dict.fromkeys([certificate_id, *(e.get("ci") for e in payload[kind] if _is_uci(e.get("ci")))])
    return cwt.PassContents(
        issued_at=issued_at,
        expires=expires,
        issuer=issuing_country(claims.get(cwt.ISS), keys),
        pass_id=certificate_id,
        revocation_ids=tuple(ucis),
        dcc_payload=normalised_payload(payload, kind, entry),
    )


def _is_uci(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CI_CHARS


def is_revoked(index: RevocationIndex, sign1: Sign1, contents: cwt.PassContents) -> bool:
    """Whether ``index`` revokes this DCC by a UCI, by its issuing country and a UCI, or by its signature.

    The country is the one ``issuing_country`` chose; without one, no ``country_uci`` entry can match.
    """
    country = contents.issuer
    for uci in contents.revocation_ids:
        if index.contains(HashType.UCI, uci_hash(uci)):
            return True
        if country is not None and index.contains(HashType.COUNTRY_UCI, country_uci_hash(country, uci)):
            return True
    return index.contains(HashType.SIGNATURE, signature_hash(sign1.signature, sign1.alg))
