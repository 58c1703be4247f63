"""Properties of the whole "QR text -> verdict" path, under hypothesis.

The fuzz target (tests/fuzz/fuzz_verify.py) supplies the verifier, its trust store of real keys, the
seed passes and the oracle; ``fuzz.check`` raises on a forgery or a broken contract. On top of it,
each test states the property it generates inputs for: random text is never accepted, a change to the
signed bytes of a real pass is never accepted, a change outside them may be (and then carries the
original's signed content), and nothing raises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import zlib

import base45
import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fuzz import fuzz_verify as fuzz
from qrgate.passes.cccd import IDENTIFIED, CccdPolicy, CccdResult, read_cccd

TARGET = fuzz.target()
# Real passes the verifier accepts, each at its own time: the fuzz issuers' and the EU test vectors'.
ACCEPTED = [(TARGET.times[index], text) for index, text in TARGET.seeds
            if TARGET.verifier.verify(text, TARGET.times[index]).accepted]
MINTED = [(at, text) for at, text in ACCEPTED if at == fuzz.NOW]
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any code point, lone surrogates often (a decoder hands them over for bytes that are not UTF-8).
any_character = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
)


def test_the_seeds_hold_accepted_passes_of_every_kind() -> None:
    assert {text[:4] for _, text in MINTED} == {"HC1:", "QG1:"} and len(MINTED) >= 4
    if not fuzz.DCC_TESTDATA.is_dir():
        pytest.skip(f"EU DCC test data not found at {fuzz.DCC_TESTDATA}: only the minted passes are seeds")
    assert len(ACCEPTED) - len(MINTED) > 100  # most EU test vectors, at their validation clocks


def split_pass(text: str) -> tuple[str, bytes, bool]:
    """(prefix, COSE message, whether it was zlib-compressed)."""
    data = base45.b45decode(text[4:])
    if text.startswith("HC1:"):
        try:
            return text[:4], zlib.decompress(data), True
        except zlib.error:
            pass
    return text[:4], data, False


def join_pass(prefix: str, message: bytes, compressed: bool) -> str:
    return prefix + base45.b45encode(zlib.compress(message, 9) if compressed else message).decode()


def assert_no_forgery(text: str, at: float, original: str) -> bool:
    """Whether ``text`` was accepted; if it was, it carries exactly ``original``'s signed content."""
    verdict = fuzz.check(text, at)
    if verdict.accepted:
        assert fuzz.signed_content(text) == fuzz.signed_content(original)
    return verdict.accepted


@PROPERTY
@given(st.text(any_character, max_size=1500))
def test_random_text_gets_a_verdict_and_is_never_accepted(text: str) -> None:
    assert not fuzz.check(text, fuzz.NOW).accepted


@PROPERTY
@given(
    st.sampled_from(["HC1:", "QG1:", "hc1:", "HC1", "HC1:HC1:", "QG1:HC1:", " HC1:", "HC2:", ""]),
    st.text(st.sampled_from(BASE45_ALPHABET + "abc\x00é"), max_size=1500),
)
def test_a_prefix_and_base45_garbage_is_never_accepted(prefix: str, body: str) -> None:
    assert not fuzz.check(prefix + body, fuzz.NOW).accepted


_mutation = st.tuples(st.sampled_from(["replace", "insert", "delete", "flip"]), st.integers(0, 10_000),
                      st.integers(0, 255))


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in mutations:
        at = position % (len(buffer) + (kind == "insert")) if buffer or kind == "insert" else 0
        if kind == "replace" and buffer:
            buffer[at] = value
        elif kind == "insert":
            buffer.insert(at, value)
        elif kind == "delete" and buffer:
            del buffer[at]
        elif kind == "flip" and buffer:
            buffer[at] ^= 1 << (value % 8)
    return bytes(buffer)


@PROPERTY
@given(st.sampled_from(ACCEPTED), st.lists(_mutation, min_size=1, max_size=4), st.booleans())
def test_a_real_pass_with_mutated_bytes_is_accepted_only_with_its_signed_content_intact(
    seed: tuple[float, str], mutations: list[tuple[str, int, int]], recompress: bool,
) -> None:
    at, original = seed
    prefix, message, compressed = split_pass(original)
    mutated = mutate(message, mutations)
    text = join_pass(prefix, mutated, compressed or (recompress and prefix == "HC1:"))
    assert_no_forgery(text, at, original)


@PROPERTY
@given(st.sampled_from(ACCEPTED), st.sampled_from(["protected", "payload", "signature"]),
       st.integers(0, 10_000), st.integers(1, 255))
def test_a_change_to_any_signed_byte_or_the_signature_is_never_accepted(
    seed: tuple[float, str], part: str, position: int, xor: int,
) -> None:
    at, original = seed
    prefix, message, compressed = split_pass(original)
    item = cbor2.loads(message)
    tags = []
    while isinstance(item, cbor2.CBORTag):
        tags.append(item.tag)
        item = item.value
    fields = list(item)
    index = {"protected": 0, "payload": 2, "signature": 3}[part]
    assume(fields[index])
    changed = bytearray(fields[index])
    changed[position % len(changed)] ^= xor
    fields[index] = bytes(changed)
    rebuilt: object = fields
    for tag in reversed(tags):
        rebuilt = cbor2.CBORTag(tag, rebuilt)
    text = join_pass(prefix, cbor2.dumps(rebuilt), compressed)
    assert not fuzz.check(text, at).accepted


@PROPERTY
@given(st.sampled_from(MINTED),
       st.dictionaries(st.integers(-70_000, -65_536), st.binary(max_size=20), min_size=1, max_size=3))
def test_a_change_outside_the_signed_bytes_is_a_legitimate_re_encoding(seed: tuple[float, str], extra: dict) -> None:
    # The oracle's other side: adding unprotected header parameters changes the text but not what was
    # signed, and the pass stays valid (kid and alg of the minted passes are protected, except in one).
    at, original = seed
    prefix, message, compressed = split_pass(original)
    protected, unprotected, payload, signature = cbor2.loads(message).value
    text = join_pass(prefix, cbor2.dumps(cbor2.CBORTag(18, [protected, {**unprotected, **extra}, payload, signature])),
                     compressed)
    assert text != original
    assert assert_no_forgery(text, at, original)


@PROPERTY
@given(st.sampled_from(ACCEPTED), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
def test_truncated_and_duplicated_segments_are_never_forgeries(seed: tuple[float, str], a: int, b: int, c: int) -> None:
    at, original = seed
    n = len(original)
    i, j = sorted((a % n, b % n))
    truncated = original[:max(i, 1)]
    duplicated = original[:j] + original[i:j] + original[j:]
    spliced = original[:i] + original[j:] + original[c % n:]
    for text in (truncated, duplicated, spliced, original + original[i:j], original[i:]):
        if text != original:
            assert_no_forgery(text, at, original)
    assert not fuzz.check(truncated, at).accepted or truncated == original


# --- the CCCD reader ------------------------------------------------------------------------------------------

POLICY = CccdPolicy(enabled=True, hash_key=b"k" * 32)


@st.composite
def cccd_cards(draw) -> tuple[str, str]:
    """A well-formed card text and its ID number, with the number's digits consistent with the fields."""
    year = draw(st.integers(1900, 2015))
    female = draw(st.booleans())
    id_number = (f"{draw(st.integers(1, 96)):03d}{(year - 1900) // 100 * 2 + female}{year % 100:02d}"
                 f"{draw(st.integers(0, 999_999)):06d}")
    birth = draw(st.dates(min_value=dt.date(year, 1, 1), max_value=dt.date(year, 12, 31)))
    issued = draw(st.dates(min_value=dt.date(2016, 1, 1), max_value=dt.date(2030, 12, 31)))
    name = draw(st.text(st.characters(exclude_categories=("C",), exclude_characters="|"), min_size=1, max_size=100))
    address = draw(st.text(st.characters(exclude_categories=("C",), exclude_characters="|"), min_size=1, max_size=300))
    old_id = draw(st.sampled_from(["", "012345678", id_number]))
    fields = (id_number, old_id, name, birth.strftime("%d%m%Y"), "Nữ" if female else "Nam", address,
              issued.strftime("%d%m%Y"))
    return "|".join(fields), id_number


@PROPERTY
@given(cccd_cards())
def test_every_well_formed_card_is_identified_and_its_hash_depends_on_the_number_only(card: tuple[str, str]) -> None:
    text, id_number = card
    digest = hmac.new(POLICY.hash_key, id_number.encode(), hashlib.sha256).digest()[:16].hex()
    assert read_cccd(text, POLICY) == CccdResult(IDENTIFIED, subject_hash=digest)
    fuzz.check_cccd(text)
    rest = text.split("|")
    same_number = "|".join([id_number, "", "Another Name", *rest[3:5], "Another address", rest[6]])
    assert read_cccd(same_number, POLICY) == CccdResult(IDENTIFIED, subject_hash=digest)


@PROPERTY
@given(cccd_cards(), st.lists(_mutation, min_size=1, max_size=4))
def test_a_mutated_card_never_breaks_the_reader(card: tuple[str, str], mutations: list[tuple[str, int, int]]) -> None:
    text = mutate(card[0].encode("utf-8"), mutations).decode("utf-8", "surrogateescape")
    fuzz.check(text, fuzz.NOW)


@PROPERTY
@given(st.lists(st.text(any_character, max_size=40), min_size=1, max_size=12),
       st.text("0123456789", min_size=12, max_size=12))
def test_any_fields_behind_a_card_number_get_an_answer(fields: list[str], id_number: str) -> None:
    fuzz.check("|".join([id_number, *fields]), fuzz.NOW)


@pytest.mark.parametrize("length", [0, 1, 12, 13, 4096, 100_000])
def test_long_and_short_card_like_texts_get_an_answer(length: int) -> None:
    fuzz.check(("001090123456|" + "|" * length)[: 13 + length], fuzz.NOW)
