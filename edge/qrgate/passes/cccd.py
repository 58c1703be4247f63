"""Vietnam's chip citizen ID card (CCCD): its QR code identifies a person, it does not prove anything.

The QR on the front of the chip card (card design of Circular 06/2021/TT-BCA, issued since 2021) is
plain UTF-8 text, seven fields separated by ``|``, and no signature::

    ID number (12 digits) | old 9-digit CMND number, empty if none | full name | date of birth ddmmyyyy |
    sex (Nam / Nữ) | permanent address | issue date ddmmyyyy

Sources: the fields and their order as Bà Rịa-Vũng Tàu newspaper lists what a QR reader shows
(baobariavungtau.com.vn, 2022-12: "Số CCCD, số CMND 9 số; họ và tên; ngày sinh; giới tính; nơi thường
trú; ngày cấp CCCD"); the old number present only for holders who had a CMND (ictnews.vietnamnet.vn,
2021-04); public CCCD readers give the same shape, e.g. ``001090123456|012345678|NGUYEN VAN A|01011990|
Nam|<address>|15042021``. The ID number is the personal identification number of Decree 137/2015/NĐ-CP
art. 13 and Circular 59/2021/TT-BCA art. 4: province of birth registration (3 digits), century and sex
(1 digit: 0/1 = 1900s male/female, 2/3 = 2000s, ...), the last two digits of the birth year, and 6 random
digits. The "thẻ căn cước" of the 2023 Identity Law (issued from 2024-07-01) carries a different QR whose
content is not published here: it is not read as a CCCD.

Exactly seven fields: every source agrees on seven, and a text with more or fewer is a misread or not
this card. The fields are cross-checked (birth year and sex against the ID number's digits) so a random
``<12 digits>|...`` text is not taken for a card.

What leaves this module is a keyed hash of the ID number and nothing else: the name, birth date,
address and the number itself exist only in local variables while one text is checked. The key is
per province (every gate of a province shares it, so the backend can link visits of one card); the
backend never needs it. Keep it secret: there are only ~10^10 structured ID numbers, so anyone holding
the key can reverse a hash by trying them all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import unicodedata
from dataclasses import dataclass
from typing import Final

from .verdict import Reason

MAX_TEXT_CHARS: Final = 512  # seven fields; a long Vietnamese address is under 150 characters
MAX_NAME_CHARS: Final = 100
MAX_ADDRESS_CHARS: Final = 300
FIELD_COUNT: Final = 7
ID_DIGITS: Final = 12
OLD_ID_LENGTHS: Final = (9, 12)  # the 9-digit CMND, or the 12-digit CMND of 2012-2016 (the field may also be empty)
FIRST_CARD_YEAR: Final = 2016  # the first CCCD cards; an earlier issue date is not this card
MIN_HASH_KEY_BYTES: Final = 32
SUBJECT_HASH_BYTES: Final = 16  # 128 bits: no collisions among a country's cards

# Outcomes, as the Reason the gate reports for each.
IDENTIFIED: Final = Reason.IDENTIFIED  # a well-formed card, accepted by policy as identified, not verified
UNSIGNED_PASS: Final = Reason.UNSIGNED_PASS  # a card while the policy does not accept unsigned codes
MALFORMED: Final = Reason.MALFORMED  # it claims to be a card (12 digits, then '|') but is not a valid one

_SEXES: Final = {"Nam": 0, "Nữ": 1}  # parity of the century-and-sex digit


@dataclass(frozen=True, slots=True)
class CccdPolicy:
    """Whether this gate accepts CCCD cards, and the province's key for hashing their ID numbers."""

    enabled: bool = False
    hash_key: bytes = b""

    def __post_init__(self) -> None:
        if self.enabled and len(self.hash_key) < MIN_HASH_KEY_BYTES:
            raise ValueError(f"a CCCD hash key of at least {MIN_HASH_KEY_BYTES} bytes is needed to accept CCCD cards")


CCCD_OFF = CccdPolicy()  # the default: CCCD cards are not accepted


@dataclass(frozen=True, slots=True)
class CccdResult:
    """What the gate learns from a CCCD text: an outcome, and for an identified card its subject hash."""

    outcome: Reason  # IDENTIFIED, UNSIGNED_PASS or MALFORMED
    subject_hash: str | None = None  # hex HMAC-SHA256(province key, ID number), first 16 bytes; IDENTIFIED only
    detail: str | None = None  # for MALFORMED, the check that failed; never card content

    @property
    def identified(self) -> bool:
        return self.outcome == IDENTIFIED


def looks_like_cccd(text: str) -> bool:
    """Whether ``text`` claims to be a CCCD QR: twelve ASCII digits, then ``|``. O(1)."""
    head = text[:ID_DIGITS]
    return len(text) > ID_DIGITS and text[ID_DIGITS] == "|" and head.isascii() and head.isdigit()


def read_cccd(text: str, policy: CccdPolicy) -> CccdResult | None:
    """The gate's reading of a CCCD QR text; None when ``text`` is not one. Never raises.

    With the policy off the card is refused as ``unsigned_pass`` without reading any field.
    """
    if not looks_like_cccd(text):
        return None
    if not policy.enabled:
        return CccdResult(UNSIGNED_PASS)
    problem = _problem(text)
    if problem is not None:
        return CccdResult(MALFORMED, detail=problem)
    id_number = text[:ID_DIGITS]
    digest = hmac.new(policy.hash_key, id_number.encode("ascii"), hashlib.sha256).digest()
    return CccdResult(IDENTIFIED, subject_hash=digest[:SUBJECT_HASH_BYTES].hex())


def _problem(text: str) -> str | None:
    """The first check a CCCD text fails ("cccd_length", "cccd_fields", ...), or None when it is valid."""
    if len(text) > MAX_TEXT_CHARS:
        return "cccd_length"
    # maxsplit: a hostile text of a thousand '|' costs eight strings, not a thousand.
    fields = text.split("|", FIELD_COUNT)
    if len(fields) != FIELD_COUNT:
        return "cccd_fields"
    id_number, old_id, name, birth, sex, address, issued = fields
    if old_id and not (len(old_id) in OLD_ID_LENGTHS and old_id.isascii() and old_id.isdigit()):
        return "cccd_old_id"
    if not _is_text(name, MAX_NAME_CHARS) or not _is_text(address, MAX_ADDRESS_CHARS):
        return "cccd_text"
    birth_date, issue_date = _date(birth), _date(issued)
    if birth_date is None or issue_date is None or issue_date.year < FIRST_CARD_YEAR or issue_date < birth_date:
        return "cccd_date"
    century_sex = int(id_number[3])
    sex_parity = _SEXES.get(unicodedata.normalize("NFC", sex))
    if sex_parity is None or century_sex % 2 != sex_parity:
        return "cccd_sex"
    if birth_date.year != 1900 + 100 * (century_sex // 2) + int(id_number[4:6]):
        return "cccd_birth_year"
    return None


def _is_text(value: str, max_chars: int) -> bool:
    """Non-empty, bounded, and no control, format or unassigned characters (nor lone surrogates)."""
    return 0 < len(value) <= max_chars and not any(unicodedata.category(ch)[0] == "C" for ch in value)


def _date(value: str) -> dt.date | None:
    """A ddmmyyyy date, or None."""
    if len(value) != 8 or not (value.isascii() and value.isdigit()):
        return None
    try:
        return dt.date(int(value[4:]), int(value[2:4]), int(value[:2]))
    except ValueError:
        return None
