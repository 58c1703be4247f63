"""Hostile codes: every one is refused as malformed, quickly and within bounded memory, and nothing raises."""

from __future__ import annotations

import math
import zlib

import base45
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrgate.passes import cwt
from qrgate.passes.algorithms import BY_NAME
from qrgate.passes.codec import MAX_INFLATED_BYTES, MAX_TEXT_CHARS, inflate
from qrgate.passes.rejection import Rejected
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verdict import Reason, Verdict
from qrgate.passes.verifier import PassVerifier
from qrgate_provisioning.dcc_test_issuer import fake_vaccination_payload, new_dcc_test_issuer
from qrgate_provisioning.keys import new_issuer_key
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass

NOW = 1_767_225_600
QG_ISSUER = new_issuer_key("VN-HN", "EdDSA")
DCC_ISSUER = new_dcc_test_issuer("ES256", NOW)
assert DCC_ISSUER.certificate is not None
VERIFIER = PassVerifier(TrustStore([
    TrustedKey.from_certificate(DCC_ISSUER.certificate, "test"),
    TrustedKey(kid=QG_ISSUER.kid, alg=BY_NAME["EdDSA"], public_key=QG_ISSUER.private_key.public_key(), source="test"),
]))
VALID_QG = mint_qrgate_pass(QG_ISSUER, "VN-HN", b"\x01" * 16, "subj-1", NOW - 60, NOW + 86_400)
VALID_HC1 = mint_dcc_pass(DCC_ISSUER, DCC_ISSUER.certificate, fake_vaccination_payload("URN:UVCI:01:VN:X"),
                          NOW - 60, NOW + 86_400)


def hc1(message: bytes, *, compress: bool = True) -> str:
    return "HC1:" + base45.b45encode(zlib.compress(message, 9) if compress else message).decode()


def qg1(message: bytes) -> str:
    return "QG1:" + base45.b45encode(message).decode()


def assert_malformed(text: str, detail: str) -> None:
    verdict = VERIFIER.verify(text, NOW)
    assert (verdict.reason, verdict.detail) == (Reason.MALFORMED, detail)


def test_the_valid_passes_used_here_are_accepted() -> None:
    assert VERIFIER.verify(VALID_QG, NOW).accepted
    assert VERIFIER.verify(VALID_HC1, NOW).accepted


# --- text and transport ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
def test_text_longer_than_any_qr_code_is_refused_before_decoding(prefix) -> None:
    assert_malformed(prefix + "A" * (MAX_TEXT_CHARS + 1 - len(prefix)), "length")
    assert_malformed(prefix + "%" * 10_000_000, "length")  # not even valid base45: never looked at


@pytest.mark.parametrize("body", ["NCF=AB", "ABCD", "GGW", "ÄÖÜ", "\x00\x00\x00", "abc"])
def test_invalid_base45_is_malformed(body) -> None:
    assert_malformed("HC1:" + body, "base45")


def test_a_zlib_bomb_is_refused_at_the_cap() -> None:
    bomb = zlib.compress(b"\x00" * 2_500_000, 9)  # 2.4 KiB that inflate to 2.5 MB
    text = "HC1:" + base45.b45encode(bomb).decode()
    assert len(text) <= MAX_TEXT_CHARS
    assert_malformed(text, "zlib_size")


def test_inflate_stops_at_the_cap_and_accepts_exactly_the_cap() -> None:
    assert len(inflate(zlib.compress(b"x" * MAX_INFLATED_BYTES))) == MAX_INFLATED_BYTES
    with pytest.raises(Rejected) as refused:
        inflate(zlib.compress(b"x" * (MAX_INFLATED_BYTES + 1)))
    assert refused.value.detail == "zlib_size"


def test_broken_zlib_streams_are_malformed() -> None:
    stream = zlib.compress(b"\xd2\x84" + b"payload" * 20)
    assert_malformed("HC1:" + base45.b45encode(stream[:-6]).decode(), "zlib")  # truncated
    assert_malformed("HC1:" + base45.b45encode(stream + b"trailing").decode(), "zlib")
    corrupt = stream[:2] + bytes([stream[2] ^ 0xFF]) + stream[3:]
    assert_malformed("HC1:" + base45.b45encode(corrupt).decode(), "zlib")


# --- CBOR and COSE ----------------------------------------------------------------------------------------


def test_ten_thousand_nested_arrays_are_malformed() -> None:
    assert_malformed(hc1(b"\x81" * 10_000 + b"\x00"), "cbor")
    assert_malformed(hc1(b"\xa1\x01" * 10_000 + b"\x00"), "cbor")  # maps
    assert_malformed(qg1(b"\x81" * 2_000 + b"\x00"), "cbor")  # as deep as fits uncompressed in a QR code


def test_deep_nesting_in_the_unprotected_header_is_malformed() -> None:
    message = cbor2.loads(zlib.decompress(base45.b45decode(VALID_HC1[4:])))
    protected, _, payload, signature = message.value
    deep_header = b"\xa1\x01" + b"\x81" * 10_000 + b"\x00"
    raw = b"\xd2\x84" + cbor2.dumps(protected) + deep_header + cbor2.dumps(payload) + cbor2.dumps(signature)
    assert_malformed(hc1(raw), "cbor")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x5a\x05\xf5\xe1\x00" + b"x" * 16,  # a byte string claiming 100 MB
        b"\x7b\x00\x00\x00\x01\x00\x00\x00\x00abc",  # a text string claiming 4 GB
        b"\x9a\xff\xff\xff\xff\x00",  # an array claiming 2^32 - 1 items
        b"\xbb\x7f\xff\xff\xff\xff\xff\xff\xff\x00",  # a map claiming 2^63 - 1 pairs
        b"\x9f" * 1_000,  # unterminated indefinite arrays
        b"\xff",  # a lone break
        b"\x1c",  # a reserved additional-information value
        b"",
    ],
)
def test_lying_cbor_headers_are_malformed(raw) -> None:
    assert_malformed(hc1(raw), "cbor")


def test_a_truncated_cose_message_is_malformed() -> None:
    message = base45.b45decode(VALID_QG[4:])
    for cut in (1, len(message) // 2, len(message) - 1):
        assert_malformed(qg1(message[:cut]), "cbor")


def test_bytes_after_the_cose_message_are_malformed() -> None:
    assert_malformed(qg1(base45.b45decode(VALID_QG[4:]) + b"\x00"), "cbor")


@pytest.mark.parametrize(
    "item",
    [
        0,
        "COSE",
        [b"", {}, b""],  # three elements
        [b"", {}, b"", b"", b""],
        [{}, {}, b"", b""],  # protected header not a byte string
        [b"", [], b"", b""],  # unprotected header not a map
        [b"", {}, None, b""],  # detached payload
        [b"", {}, b"", "signature"],
        cbor2.CBORTag(98, [b"", {}, b"", b""]),  # COSE_Sign, not COSE_Sign1
        cbor2.CBORTag(61, [b"", {}, b"", b""]),  # CWT tag around something that is not a COSE_Sign1
    ],
)
def test_cose_structures_of_the_wrong_shape_are_malformed(item) -> None:
    assert_malformed(qg1(cbor2.dumps(item)), "cose_structure")


@pytest.mark.parametrize(
    ("protected", "unprotected", "detail"),
    [
        (cbor2.dumps([1, -8]), {}, "cose_header"),  # protected header not a map
        (b"\xa1\x01", {}, "cose_header"),  # protected header truncated
        (cbor2.dumps({4: QG_ISSUER.kid}), {}, "cose_header"),  # no algorithm anywhere
        (cbor2.dumps({1: True, 4: QG_ISSUER.kid}), {}, "cose_header"),
        (cbor2.dumps({1: -8}), {}, "kid"),  # no kid anywhere
        (cbor2.dumps({1: -8, 4: "kid-as-text"}), {}, "cose_header"),
        (cbor2.dumps({1: -8}), {4: 42}, "cose_header"),
        (cbor2.dumps({1: -8, 4: b""}), {}, "cose_header"),
    ],
)
def test_bad_headers_are_malformed(protected, unprotected, detail) -> None:
    assert_malformed(qg1(cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, b"\xa0", b"s" * 64]))), detail)


def test_semantic_tags_in_the_unprotected_header_stay_inert() -> None:
    # A regular expression, a huge rational and a malformed date: cbor2 would compile, reduce and fail on them.
    message = cbor2.loads(base45.b45decode(VALID_QG[4:]))
    protected, _, payload, signature = message.value
    tags = {
        -70001: cbor2.CBORTag(35, "(a+)+$"),
        -70002: cbor2.CBORTag(30, [2**4000 - 1, 2**3999 + 1]),
        -70003: cbor2.CBORTag(0, "not a date"),
    }
    text = qg1(cbor2.dumps(cbor2.CBORTag(18, [protected, tags, payload, signature])))
    assert VERIFIER.verify(text, NOW).accepted


# --- never an exception -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600))
def test_any_text_gets_a_verdict(text) -> None:
    for candidate in (text, "HC1:" + text, "QG1:" + text):
        assert isinstance(VERIFIER.verify(candidate, NOW), Verdict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500), st.booleans())
def test_any_bytes_behind_a_prefix_get_a_verdict(data, compress) -> None:
    for text in (hc1(data, compress=compress), qg1(data)):
        verdict = VERIFIER.verify(text, NOW)
        assert isinstance(verdict, Verdict) and not verdict.accepted


def _cbor_items() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                        st.text(max_size=20), st.binary(max_size=70))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(st.one_of(st.integers(-300, 300), st.text(max_size=5)), inner, max_size=5),
            st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 18, 24, 30, 35, 61, 258]), inner),
        ),
        max_leaves=30,
    )


@settings(max_examples=300, deadline=None)
@given(_cbor_items())
def test_any_cbor_item_as_the_message_gets_a_verdict(item) -> None:
    raw = cbor2.dumps(item)
    for text in (hc1(raw), qg1(raw)):
        verdict = VERIFIER.verify(text, NOW)
        assert isinstance(verdict, Verdict) and not verdict.accepted


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_qrgate_pass_with_one_character_changed_is_never_accepted(data) -> None:
    body = VALID_QG[4:]
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    replacement = data.draw(st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".replace(body[index], "")))
    verdict = VERIFIER.verify("QG1:" + body[:index] + replacement + body[index + 1:], NOW)
    assert not verdict.accepted


# --- absurd validity windows, correctly signed ----------------------------------------------------------------


def signed_pass(prefix: str, iat: float, exp: float) -> str:
    """A correctly signed pass of either format with the given iat and exp claims (int or float)."""
    if prefix == "HC1:":
        return mint_dcc_pass(DCC_ISSUER, DCC_ISSUER.certificate, fake_vaccination_payload("URN:UVCI:01:VN:X"), iat, exp)
    return mint_qrgate_pass(QG_ISSUER, "VN-HN", b"\x01" * 16, "subj-1", iat, exp)


ABSURD_DATES = [1e300, 10**12, 2**63, 2**64 + 1, -1e300, -(10**12), -1, 0, cwt.MIN_NUMERIC_DATE - 1,
                cwt.MAX_NUMERIC_DATE + 1, 1e20]


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
@pytest.mark.parametrize("exp", ABSURD_DATES)
def test_a_signed_pass_with_an_absurd_expiry_is_malformed(prefix, exp) -> None:
    assert_malformed(signed_pass(prefix, NOW - 60, exp), "claims")


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
@pytest.mark.parametrize("iat", ABSURD_DATES)
def test_a_signed_pass_with_an_absurd_issue_date_is_malformed(prefix, iat) -> None:
    assert_malformed(signed_pass(prefix, iat, NOW + 60), "claims")


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
def test_the_sane_range_ends_are_accepted_as_dates(prefix) -> None:
    # 2000-01-01 and 2200-01-01 themselves are dates, not malformed: the pass is merely in force.
    assert VERIFIER.verify(signed_pass(prefix, cwt.MIN_NUMERIC_DATE, cwt.MAX_NUMERIC_DATE), NOW).accepted


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
@pytest.mark.parametrize(("iat", "exp"), [(NOW + 100, NOW + 50), (NOW + 1, NOW), (NOW - 50, NOW - 100)])
def test_a_pass_issued_after_it_expires_is_malformed_even_inside_the_clock_skew(prefix, iat, exp) -> None:
    # Each end is within the 300 s skew of NOW, so the time check alone would accept it.
    assert_malformed(signed_pass(prefix, iat, exp), "claims")


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
def test_a_pass_issued_and_expiring_in_the_same_second_is_a_window_not_a_fault(prefix) -> None:
    assert VERIFIER.verify(signed_pass(prefix, NOW, NOW), NOW).accepted


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True)),
       st.sampled_from(["HC1:", "QG1:"]))
def test_any_signed_expiry_gets_a_verdict_that_every_formatter_can_print(exp, prefix) -> None:
    from qrgate.commands.verify import iso_time

    verdict = VERIFIER.verify(signed_pass(prefix, NOW - 60, exp), NOW)
    # In force from iat (NOW - 60) to exp, and a NumericDate counts whole seconds.
    seconds = math.floor(exp) if math.isfinite(exp) else None
    assert verdict.accepted == (seconds is not None and NOW - 60 <= seconds <= cwt.MAX_NUMERIC_DATE)
    if verdict.expires is not None:
        assert iso_time(verdict.expires) is not None  # whatever the verifier lets through is a real date


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True)))
def test_the_date_formatters_survive_any_value(value) -> None:
    from qrgate.commands.verify import iso_time
    from qrgate_provisioning.batch import display_date

    printed = iso_time(value)
    assert printed is None or printed.endswith("Z")
    try:
        assert len(display_date(value)) == 10  # dd/mm/yyyy
    except ValueError as refused:
        assert "not a date that can be printed" in str(refused)


@pytest.mark.parametrize("expires", [10**12, 1e300, -(10**12)])
def test_a_card_with_an_absurd_expiry_is_refused_with_a_message_not_a_crash(expires) -> None:
    from qrgate_provisioning.cards import Card, cards_pdf

    with pytest.raises(ValueError, match="not a date that can be printed"):
        cards_pdf([Card(pass_text=VALID_QG, pass_id="01" * 16, expires=expires, issuer="VN-HN")])
