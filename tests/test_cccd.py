"""The chip ID card (CCCD) reader: strict parsing, policy, and nothing personal in what it returns.

Every card here is invented: the name reads "Nguyễn Thử Nghiệm" ("test"), the numbers follow the
structure of the personal identification number but belong to nobody known.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import unicodedata

import pytest

from qrgate.passes.cccd import (
    IDENTIFIED,
    MALFORMED,
    MAX_TEXT_CHARS,
    MIN_HASH_KEY_BYTES,
    UNSIGNED_PASS,
    CccdPolicy,
    CccdResult,
    read_cccd,
)

KEY = bytes(range(32))
ENABLED = CccdPolicy(enabled=True, hash_key=KEY)
DISABLED = CccdPolicy()

ID_NUMBER = "001090123456"  # Hà Nội (001), born in the 1900s and male (0), in (19)90
NAME = "Nguyễn Thử Nghiệm"
ADDRESS = "Số 1 Phố Thử, Phường Hàng Bạc, Quận Hoàn Kiếm, Hà Nội"


def card(
    id_number: str = ID_NUMBER,
    old_id: str = "012345678",
    name: str = NAME,
    birth: str = "01011990",
    sex: str = "Nam",
    address: str = ADDRESS,
    issued: str = "15042021",
) -> str:
    return "|".join((id_number, old_id, name, birth, sex, address, issued))


def expected_hash(id_number: str, key: bytes = KEY) -> str:
    return hmac.new(key, id_number.encode(), hashlib.sha256).hexdigest()[:32]


def test_a_valid_card_is_identified_by_a_keyed_hash_of_its_number() -> None:
    result = read_cccd(card(), ENABLED)
    assert result == CccdResult(IDENTIFIED, subject_hash=expected_hash(ID_NUMBER))
    assert result.identified


def test_the_result_holds_no_personal_data() -> None:
    result = read_cccd(card(), ENABLED)
    assert [field.name for field in dataclasses.fields(CccdResult)] == ["outcome", "subject_hash", "detail"]
    shown = repr(result)
    for personal in (ID_NUMBER, "012345678", NAME, "01011990", ADDRESS, "15042021"):
        assert personal not in shown


def test_the_same_card_gives_the_same_hash_whatever_else_changed() -> None:
    # A re-issued card keeps its number: a new address or issue date still links to the same visits.
    first = read_cccd(card(), ENABLED)
    moved = read_cccd(card(address="Thôn Thử, Xã Thử, Huyện Thử, Tỉnh Thanh Hóa", issued="02012024"), ENABLED)
    assert first.subject_hash == moved.subject_hash


def test_another_number_or_another_province_key_gives_another_hash() -> None:
    other_card = read_cccd(card(id_number="001090654321"), ENABLED)
    other_key = read_cccd(card(), CccdPolicy(enabled=True, hash_key=b"\xff" * 32))
    mine = read_cccd(card(), ENABLED).subject_hash
    assert len({mine, other_card.subject_hash, other_key.subject_hash}) == 3
    assert other_key.subject_hash == expected_hash(ID_NUMBER, b"\xff" * 32)


@pytest.mark.parametrize(
    "text",
    [
        card(old_id=""),  # never had a CMND
        card(old_id="001090123456"),  # the 12-digit CMND of 2012-2016
        card(id_number="079308123456", birth="29022008", sex="Nữ", old_id=""),  # 2000s, female, a leap day
        card(id_number="079308123456", birth="29022008", sex=unicodedata.normalize("NFD", "Nữ"), old_id=""),
        card(name="NGUYEN VAN A", address="123 DUONG ABC"),  # without diacritics
    ],
)
def test_variants_of_a_valid_card_are_identified(text: str) -> None:
    result = read_cccd(text, ENABLED)
    assert result is not None and result.outcome == IDENTIFIED, result
    assert result.subject_hash == expected_hash(text[:12])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://example.com/001090123456|x",
        "HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH-R6IOO6+IUKRG*I.I4",
        "00109012345|012345678|A|01011990|Nam|B|15042021",  # 11 digits
        "0010901234567|A",  # 13 digits
        "001090123456",  # no separator
        "00109012345a|A",
        "００１０９０１２３４５６|A",  # full-width digits are digits to Python, not to a card
        "٠٠١٠٩٠١٢٣٤٥٦|A",  # Arabic-Indic digits
    ],
)
def test_texts_that_are_not_a_card_are_not_read(text: str) -> None:
    assert read_cccd(text, ENABLED) is None
    assert read_cccd(text, DISABLED) is None


def test_with_the_policy_off_a_card_is_an_unsigned_pass_and_no_field_is_read() -> None:
    assert read_cccd(card(), DISABLED) == CccdResult(UNSIGNED_PASS)
    # A broken card is refused the same way: its fields are not even looked at.
    assert read_cccd(card(birth="99999999") + "|extra", DISABLED) == CccdResult(UNSIGNED_PASS)
    assert read_cccd("001090123456|" + "x" * 100_000, DISABLED) == CccdResult(UNSIGNED_PASS)


def test_the_policy_is_off_by_default() -> None:
    assert CccdPolicy().enabled is False


def test_accepting_cards_needs_a_real_key() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        CccdPolicy(enabled=True, hash_key=b"short")
    with pytest.raises(ValueError):
        CccdPolicy(enabled=True)
    assert CccdPolicy(enabled=True, hash_key=b"k" * MIN_HASH_KEY_BYTES).enabled


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (card() + "x" * MAX_TEXT_CHARS, "cccd_length"),
        ("001090123456|" + "|" * 1_000, "cccd_length"),
        ("001090123456|" + "|" * 400, "cccd_fields"),
        (card() + "|", "cccd_fields"),  # eight fields
        ("|".join(card().split("|")[:6]), "cccd_fields"),  # six
        (card(old_id="12345678"), "cccd_old_id"),
        (card(old_id="01234567X"), "cccd_old_id"),
        (card(name=""), "cccd_text"),
        (card(name="A" * 101), "cccd_text"),
        (card(name="Nguyễn\x00Thử"), "cccd_text"),
        (card(name="Nguyễn\u202eThử"), "cccd_text"),  # a right-to-left override (a format character)
        (card(name="Nguy\udcc3n"), "cccd_text"),  # a lone surrogate, as a decoder may hand over bad bytes
        (card(address=""), "cccd_text"),
        (card(address="x" * 301), "cccd_text"),
        (card(birth="31021990"), "cccd_date"),
        (card(birth="00011990"), "cccd_date"),
        (card(birth="01/01/1990"), "cccd_date"),
        (card(birth="1990-1-1"), "cccd_date"),
        (card(issued="15042015"), "cccd_date"),  # before the first CCCD cards
        (card(id_number="079305123456", birth="01012020", sex="Nữ", issued="15042019"),
         "cccd_date"),  # issued before birth
        (card(sex="Nữ"), "cccd_sex"),  # the number says male
        (card(sex="nam"), "cccd_sex"),
        (card(sex="M"), "cccd_sex"),
        (card(birth="01011991"), "cccd_birth_year"),  # the number says (19)90
        (card(id_number="001290123456"), "cccd_birth_year"),  # the number says 2090
    ],
)
def test_malformed_cards_are_refused_with_the_failed_check(text: str, detail: str) -> None:
    assert read_cccd(text, ENABLED) == CccdResult(MALFORMED, detail=detail)
