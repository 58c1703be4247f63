"""PassVerifier on passes minted by qrgate_provisioning: what is accepted, and the named reason for the rest."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest

from qrgate.passes.algorithms import BY_NAME
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verdict import PassFormat, Reason
from qrgate.passes.verifier import PassVerifier
from qrgate_provisioning.dcc_test_issuer import dcc_test_set, fake_vaccination_payload, new_dcc_test_issuer
from qrgate_provisioning.keys import IssuerKey, new_dcc_issuer_key, new_issuer_key, trust_entry, trust_file
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass, sign1

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
CI = "URN:UVCI:01:VN:TEST0000000000000001"
PASS_ID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


# --- issuers, trust stores, and pass texts taken apart -------------------------------------------------


@pytest.fixture(scope="module")
def dcc_ps256() -> IssuerKey:
    return new_dcc_test_issuer("PS256", NOW)


@pytest.fixture(scope="module")
def dcc_es256() -> IssuerKey:
    return new_dcc_test_issuer("ES256", NOW)


@pytest.fixture(scope="module")
def qg_es256() -> IssuerKey:
    return new_issuer_key("VN-HN", "ES256")


@pytest.fixture(scope="module")
def qg_eddsa() -> IssuerKey:
    return new_issuer_key("VN-HN", "EdDSA")


def store_of(*issuers: IssuerKey) -> TrustStore:
    """DCC issuers trusted by their certificate; qrgate issuers by their public key, for their issuer id."""
    keys = []
    for issuer in issuers:
        if issuer.certificate is not None:
            keys.append(TrustedKey.from_certificate(issuer.certificate, "test"))
        else:
            keys.append(TrustedKey(kid=issuer.kid, alg=BY_NAME[issuer.alg], public_key=issuer.private_key.public_key(),
                                   source="test", issuer=issuer.issuer))
    return TrustStore(keys)


def key_from_entry(entry: dict[str, object], directory: Path) -> TrustedKey:
    """The key of one JSON trust entry, loaded the way a gate loads it."""
    path = directory / f"{len(list(directory.iterdir()))}.json"
    path.write_text(trust_file([entry]))
    (key,) = TrustStore.from_paths([path])
    return key


@pytest.fixture(scope="module")
def verifier(dcc_ps256, dcc_es256, qg_es256, qg_eddsa) -> PassVerifier:
    return PassVerifier(store_of(dcc_ps256, dcc_es256, qg_es256, qg_eddsa))


def dcc_pass(issuer: IssuerKey, *, iat: int = NOW - 3600, exp: int = NOW + 30 * DAY, **kwargs: Any) -> str:
    assert issuer.certificate is not None
    return mint_dcc_pass(issuer, issuer.certificate, fake_vaccination_payload(CI), iat, exp, **kwargs)


def qg_pass(issuer: IssuerKey, *, iat: int = NOW - 60, exp: int = NOW + DAY, initials: str | None = "NTN",
            iss: str = "VN-HN") -> str:
    return mint_qrgate_pass(issuer, iss, PASS_ID, "subj-7f3a9c", iat, exp, initials=initials)


def cose_of(text: str) -> bytes:
    raw = base45.b45decode(text[4:])
    return zlib.decompress(raw) if text.startswith("HC1:") else raw


def text_of(prefix: str, cose: bytes, *, compress: bool = True) -> str:
    raw = zlib.compress(cose) if prefix == "HC1:" and compress else cose
    return prefix + base45.b45encode(raw).decode()


def edit_sign1(text: str, edit: Callable[[list[Any]], None]) -> str:
    """The pass with its COSE_Sign1 array changed by ``edit`` (the signature is left as it was)."""
    message = cbor2.loads(cose_of(text))
    parts = [message.value[0], dict(message.value[1]), message.value[2], message.value[3]]
    edit(parts)
    return text_of(text[:4], cbor2.dumps(cbor2.CBORTag(18, parts)))


def signed(issuer: IssuerKey, prefix: str, claims: dict[Any, Any] | bytes, kid: bytes | None = None) -> str:
    """A pass with arbitrary claims, correctly signed: for claim checks that run after the signature."""
    payload = claims if isinstance(claims, bytes) else cbor2.dumps(claims)
    return text_of(prefix, sign1(issuer, payload, kid=kid or issuer.kid))


def b64(kid: bytes) -> str:
    return base64.b64encode(kid).decode()


# --- accepted passes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("issuer_name", ["dcc_ps256", "dcc_es256"])
def test_a_dcc_pass_is_accepted_with_its_certificate_id_and_nothing_personal(issuer_name, request, verifier) -> None:
    issuer = request.getfixturevalue(issuer_name)
    exp = NOW + 30 * DAY
    verdict = verifier.verify(dcc_pass(issuer, exp=exp), NOW)
    assert verdict.reason is Reason.ACCEPTED and verdict.accepted
    assert verdict.format is PassFormat.DCC
    assert verdict.issuer == "VN"
    assert verdict.kid == b64(issuer.kid)
    assert verdict.pass_id == CI
    assert verdict.expires == exp
    assert verdict.subject_id is None and verdict.initials is None and verdict.detail is None
    for personal in ("Nguyễn", "NGUYEN", "Thử", "1990-01-01"):
        assert personal not in repr(verdict)


@pytest.mark.parametrize("issuer_name", ["qg_es256", "qg_eddsa"])
def test_a_qrgate_pass_is_accepted_with_subject_and_initials(issuer_name, request, verifier) -> None:
    issuer = request.getfixturevalue(issuer_name)
    verdict = verifier.verify(qg_pass(issuer), NOW)
    assert verdict.reason is Reason.ACCEPTED
    assert verdict.format is PassFormat.QRGATE
    assert (verdict.issuer, verdict.subject_id, verdict.initials) == ("VN-HN", "subj-7f3a9c", "NTN")
    assert verdict.pass_id == PASS_ID.hex()
    assert verdict.kid == b64(issuer.kid)
    assert verdict.expires == NOW + DAY


def test_a_qrgate_pass_is_small_enough_for_a_3cm_code(qg_es256) -> None:
    # A version-10 QR code (57 modules) holds 311 alphanumeric characters at error correction M.
    assert len(qg_pass(qg_es256)) <= 311


def test_initials_are_optional(verifier, qg_eddsa) -> None:
    verdict = verifier.verify(qg_pass(qg_eddsa, initials=None), NOW)
    assert verdict.accepted and verdict.initials is None


def test_an_uncompressed_hc1_is_read(verifier, dcc_es256) -> None:
    text = text_of("HC1:", cose_of(dcc_pass(dcc_es256)), compress=False)
    assert verifier.verify(text, NOW).accepted


def test_cwt_tag_around_the_cose_tag_is_read(verifier, dcc_es256) -> None:
    message = cbor2.loads(cose_of(dcc_pass(dcc_es256)))
    text = text_of("HC1:", cbor2.dumps(cbor2.CBORTag(61, message)))
    assert verifier.verify(text, NOW).accepted


def test_an_untagged_cose_sign1_is_read(verifier, qg_es256) -> None:
    message = cbor2.loads(cose_of(qg_pass(qg_es256)))
    assert verifier.verify(text_of("QG1:", cbor2.dumps(list(message.value))), NOW).accepted


# --- kid placement and lookup ---------------------------------------------------------------------------


def test_a_kid_in_the_unprotected_header_is_used(verifier, dcc_ps256) -> None:
    verdict = verifier.verify(dcc_pass(dcc_ps256, kid_in="unprotected"), NOW)
    assert verdict.accepted and verdict.kid == b64(dcc_ps256.kid)


def test_the_protected_kid_outranks_an_unprotected_one(verifier, dcc_ps256, dcc_es256) -> None:
    # Anyone can rewrite the unprotected header without breaking the signature.
    text = edit_sign1(dcc_pass(dcc_ps256), lambda parts: parts[1].__setitem__(4, dcc_es256.kid))
    verdict = verifier.verify(text, NOW)
    assert verdict.accepted and verdict.kid == b64(dcc_ps256.kid)


def test_an_unprotected_kid_pointing_at_another_issuer_does_not_verify(verifier, dcc_ps256, dcc_es256) -> None:
    text = edit_sign1(dcc_pass(dcc_ps256, kid_in="unprotected"), lambda parts: parts[1].__setitem__(4, dcc_es256.kid))
    verdict = verifier.verify(text, NOW)
    assert verdict.reason is Reason.BAD_SIGNATURE and verdict.kid == b64(dcc_es256.kid)


def test_every_key_sharing_a_kid_is_tried(qg_es256, tmp_path) -> None:
    impostor = new_issuer_key("VN-HN", "ES256")
    shared_kid = b64(qg_es256.kid)
    wrong = key_from_entry({**trust_entry(impostor), "kid": shared_kid}, tmp_path)
    right = key_from_entry(trust_entry(qg_es256), tmp_path)
    text = qg_pass(qg_es256)
    assert PassVerifier(TrustStore([wrong, right])).verify(text, NOW).accepted
    assert PassVerifier(TrustStore([right, wrong])).verify(text, NOW).accepted
    only_wrong = PassVerifier(TrustStore([wrong])).verify(text, NOW)
    assert only_wrong.reason is Reason.BAD_SIGNATURE and only_wrong.detail == "signature"


# --- rejections -----------------------------------------------------------------------------------------


def test_the_demo_set_gets_one_reason_per_case() -> None:
    test_set = dcc_test_set(NOW)
    verifier = PassVerifier(store_of(*test_set.trusted))
    reasons = {case: verifier.verify(text, NOW).reason for case, text in test_set.passes.items()}
    assert reasons == {
        "valid_ps256": Reason.ACCEPTED,
        "valid_es256": Reason.ACCEPTED,
        "expired": Reason.EXPIRED,
        "not_yet_valid": Reason.NOT_YET_VALID,
        "forged": Reason.BAD_SIGNATURE,
        "unknown_issuer": Reason.UNKNOWN_ISSUER,
    }


def test_an_expired_pass_names_its_issuer_and_expiry_but_not_its_holder(verifier, qg_es256) -> None:
    verdict = verifier.verify(qg_pass(qg_es256, iat=NOW - 10 * DAY, exp=NOW - DAY), NOW)
    assert verdict.reason is Reason.EXPIRED and verdict.detail == "exp"
    assert (verdict.issuer, verdict.pass_id, verdict.expires) == ("VN-HN", PASS_ID.hex(), NOW - DAY)
    assert verdict.subject_id is None and verdict.initials is None


def test_a_pass_issued_in_the_future_is_not_yet_valid(verifier, dcc_es256) -> None:
    verdict = verifier.verify(dcc_pass(dcc_es256, iat=NOW + DAY), NOW)
    assert verdict.reason is Reason.NOT_YET_VALID and verdict.detail == "iat"


@pytest.mark.parametrize(
    ("iat", "exp", "reason"),
    [
        (NOW - DAY, NOW - 300, Reason.ACCEPTED),  # expired 5 minutes ago: within the skew
        (NOW - DAY, NOW - 301, Reason.EXPIRED),
        (NOW + 300, NOW + DAY, Reason.ACCEPTED),  # issued 5 minutes ahead of the gate clock
        (NOW + 301, NOW + DAY, Reason.NOT_YET_VALID),
    ],
)
def test_clock_skew_tolerance_is_exact(verifier, qg_es256, iat, exp, reason) -> None:
    assert verifier.verify(qg_pass(qg_es256, iat=iat, exp=exp), NOW).reason is reason


def test_a_zero_clock_skew_is_strict(dcc_es256) -> None:
    strict = PassVerifier(store_of(dcc_es256), clock_skew_s=0)
    assert strict.verify(dcc_pass(dcc_es256, exp=NOW), NOW).accepted
    assert strict.verify(dcc_pass(dcc_es256, exp=NOW - 1), NOW).reason is Reason.EXPIRED


def test_a_forged_signature_is_a_bad_signature(verifier, qg_es256) -> None:
    # The trusted key's kid and algorithm on well-formed claims, signed by another ES256 key.
    forger = new_issuer_key("VN-HN", "ES256")
    verdict = verifier.verify(signed(forger, "QG1:", qg_claims(), kid=qg_es256.kid), NOW)
    assert verdict.reason is Reason.BAD_SIGNATURE and verdict.detail == "signature"
    assert verdict.issuer is None and verdict.pass_id is None  # claims of an unverified pass are not reported


def test_a_flipped_signature_bit_is_a_bad_signature(verifier, dcc_ps256) -> None:
    def flip(parts: list[Any]) -> None:
        parts[3] = parts[3][:-1] + bytes([parts[3][-1] ^ 1])

    assert verifier.verify(edit_sign1(dcc_pass(dcc_ps256), flip), NOW).reason is Reason.BAD_SIGNATURE


def test_an_unknown_kid_is_an_unknown_issuer(verifier) -> None:
    stranger = new_dcc_test_issuer("ES256", NOW)
    verdict = verifier.verify(dcc_pass(stranger), NOW)
    assert verdict.reason is Reason.UNKNOWN_ISSUER and verdict.detail == "kid"
    assert verdict.kid == b64(stranger.kid)


@pytest.mark.parametrize("alg", [-35, -257, 5, "RS256"])  # ES384, RS256, HMAC 256/256, a text algorithm
def test_other_algorithms_are_unsupported(verifier, qg_es256, alg) -> None:
    text = edit_sign1(qg_pass(qg_es256), lambda parts: parts.__setitem__(0, cbor2.dumps({1: alg, 4: qg_es256.kid})))
    verdict = verifier.verify(text, NOW)
    assert verdict.reason is Reason.UNSUPPORTED_ALGORITHM and verdict.detail == "alg"


def test_a_key_never_verifies_under_another_algorithm(verifier, qg_es256) -> None:
    # The message says EdDSA, the key with that kid is ES256: the key is not used at all.
    text = edit_sign1(qg_pass(qg_es256), lambda parts: parts.__setitem__(0, cbor2.dumps({1: -8, 4: qg_es256.kid})))
    assert verifier.verify(text, NOW).reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("text", ["https://example.com/checkin?id=42", "", "HC1", "hc1:NCF", "QG2:ABC",
                                  "8934567890123"])
def test_other_texts_are_not_passes(verifier, text) -> None:
    verdict = verifier.verify(text, NOW)
    assert verdict.reason is Reason.NOT_A_PASS and verdict.format is PassFormat.UNKNOWN


# --- trust: validity windows, formats, issuers, key usage ---------------------------------------------------


def test_a_key_outside_its_window_is_not_trusted(qg_es256, tmp_path) -> None:
    expired_key = key_from_entry(trust_entry(qg_es256) | {"not_after": "2025-12-31T23:59:59Z"}, tmp_path)
    future_key = key_from_entry(trust_entry(qg_es256) | {"not_before": "2026-01-02"}, tmp_path)
    for key in (expired_key, future_key):
        verdict = PassVerifier(TrustStore([key])).verify(qg_pass(qg_es256), NOW)
        assert verdict.reason is Reason.UNKNOWN_ISSUER and verdict.detail == "key_not_valid"
    in_window = key_from_entry(trust_entry(qg_es256) | {"not_before": "2025-12-01", "not_after": "2026-02-01"},
                               tmp_path)
    assert PassVerifier(TrustStore([in_window])).verify(qg_pass(qg_es256), NOW).accepted


def test_a_dcc_certificate_outside_its_validity_is_not_trusted() -> None:
    issuer = new_dcc_test_issuer("ES256", NOW - 400 * DAY, valid_days=365)  # ended a month ago
    verdict = PassVerifier(store_of(issuer)).verify(dcc_pass(issuer), NOW)
    assert verdict.reason is Reason.UNKNOWN_ISSUER and verdict.detail == "key_not_valid"


def test_a_key_trusted_for_dcc_only_does_not_vouch_for_qrgate_passes(qg_es256, tmp_path) -> None:
    key = key_from_entry(trust_entry(qg_es256, formats=["dcc"]), tmp_path)
    verdict = PassVerifier(TrustStore([key])).verify(qg_pass(qg_es256), NOW)
    assert verdict.reason is Reason.UNKNOWN_ISSUER and verdict.detail == "key_not_valid"


def test_a_qrgate_pass_must_carry_its_keys_issuer(verifier, qg_es256) -> None:
    verdict = verifier.verify(qg_pass(qg_es256, iss="VN-SG"), NOW)
    assert verdict.reason is Reason.UNKNOWN_ISSUER and verdict.detail == "issuer_mismatch"


def test_a_key_registered_for_two_issuers_signs_for_each_and_no_other(qg_es256, tmp_path) -> None:
    # One entry per issuer, the same key and kid: each entry grants its issuer, whichever is tried first.
    hanoi, saigon = (key_from_entry(trust_entry(qg_es256) | {"issuer": name}, tmp_path) for name in ("VN-HN", "VN-SG"))
    for store in (TrustStore([hanoi, saigon]), TrustStore([saigon, hanoi])):
        assert PassVerifier(store).verify(qg_pass(qg_es256, iss="VN-HN"), NOW).accepted
        assert PassVerifier(store).verify(qg_pass(qg_es256, iss="VN-SG"), NOW).accepted
        assert PassVerifier(store).verify(qg_pass(qg_es256, iss="VN-HUE"), NOW).detail == "issuer_mismatch"


@pytest.mark.parametrize(("usage", "reason"), [({"v"}, Reason.ACCEPTED), ({"t", "r"}, Reason.UNKNOWN_ISSUER)])
def test_a_dcc_certificate_key_usage_limits_what_it_signs(usage, reason) -> None:
    import datetime as dt

    start = dt.datetime.fromtimestamp(NOW - DAY, dt.UTC)
    issuer = new_dcc_issuer_key("VN", "ES256", not_before=start, not_after=start + dt.timedelta(days=30),
                                dcc_types=usage)
    verdict = PassVerifier(store_of(issuer)).verify(dcc_pass(issuer), NOW)  # a vaccination certificate
    assert verdict.reason is reason
    if reason is Reason.UNKNOWN_ISSUER:
        assert verdict.detail == "key_usage"


# --- claims of the wrong shape, correctly signed ------------------------------------------------------------


def with_changes(claims: dict[Any, Any], changes: dict[Any, Any]) -> dict[Any, Any]:
    """``claims`` with ``changes`` applied; a change to None removes the claim."""
    return {k: v for k, v in (claims | changes).items() if v is not None}


def dcc_claims(changes: dict[Any, Any]) -> dict[Any, Any]:
    return with_changes({1: "VN", 6: NOW - 60, 4: NOW + DAY, -260: {1: fake_vaccination_payload(CI)}}, changes)


def qg_claims(changes: dict[Any, Any] | None = None) -> dict[Any, Any]:
    return with_changes({1: "VN-HN", 2: "subj-1", 4: NOW + DAY, 6: NOW - 60, 7: PASS_ID}, changes or {})


def dcc_payload(**changes: Any) -> dict[Any, Any]:
    """The hcert claim with the vaccination entry changed."""
    payload = fake_vaccination_payload(CI)
    payload["v"][0].update(changes)
    return {-260: {1: payload}}


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        (dcc_claims({4: "2026-01-02"}), "claims"),  # exp as text
        (dcc_claims({4: True}), "claims"),  # a boolean is not a NumericDate
        (dcc_claims({4: float("nan")}), "claims"),
        (dcc_claims({6: None}), "claims"),  # no iat
        (dcc_claims({4: 10**12}), "claims"),  # exp far beyond any pass's life (year 33658)
        (dcc_claims({4: 1e300}), "claims"),
        (dcc_claims({6: -1}), "claims"),  # iat before 2000
        (dcc_claims({6: NOW + 2 * DAY}), "claims"),  # issued after it expires (exp is NOW + DAY)
        (dcc_claims({-260: "hcert"}), "dcc_payload"),
        (dcc_claims({-260: {1: []}}), "dcc_payload"),
        (dcc_claims({-260: {1: {**fake_vaccination_payload(CI), "t": [{"ci": CI}]}}}), "dcc_payload"),  # v and t
        (dcc_claims({-260: {1: {**fake_vaccination_payload(CI), "v": []}}}), "dcc_payload"),
        (dcc_claims(dcc_payload(ci=12345)), "dcc_payload"),
        (dcc_claims(dcc_payload(ci="U" * 81)), "dcc_payload"),
    ],
)
def test_dcc_claims_of_the_wrong_shape_are_malformed(dcc_es256, claims, detail) -> None:
    verifier = PassVerifier(store_of(dcc_es256))
    verdict = verifier.verify(signed(dcc_es256, "HC1:", claims), NOW)
    assert verdict.reason is Reason.MALFORMED and verdict.detail == detail


def test_the_claims_helpers_make_an_accepted_pass(verifier, dcc_es256, qg_es256) -> None:
    # So that each malformed case above differs from an accepted pass only by its one change.
    assert verifier.verify(signed(dcc_es256, "HC1:", dcc_claims({})), NOW).accepted
    assert verifier.verify(signed(qg_es256, "QG1:", qg_claims()), NOW).accepted


@pytest.mark.parametrize(
    "claims",
    [
        qg_claims({7: "0f1e2d3c"}),  # cti as text
        qg_claims({7: b""}),
        qg_claims({7: bytes(33)}),
        qg_claims({2: None}),  # no subject
        qg_claims({2: ""}),
        qg_claims({1: None}),  # no issuer
        qg_claims({4: 10**12}),  # exp far beyond any pass's life
        qg_claims({4: 1e300}),
        qg_claims({6: NOW + 2 * DAY}),  # issued after it expires
        qg_claims({-65537: "TOO-LONG-INITIALS"}),
        qg_claims({-65537: 7}),
        [1, 2, 3],  # claims not a map
    ],
)
def test_qrgate_claims_of_the_wrong_shape_are_malformed(verifier, qg_es256, claims) -> None:
    verdict = verifier.verify(signed(qg_es256, "QG1:", cbor2.dumps(claims)), NOW)
    assert verdict.reason is Reason.MALFORMED and verdict.detail == "claims"


def test_duplicate_claims_are_malformed(verifier, qg_es256) -> None:
    # {1: "VN-HN", 1: "VN-SG", ...}: two parsers could read two different issuers.
    duplicated = b"\xa6" + b"".join(
        cbor2.dumps(k) + cbor2.dumps(v)
        for k, v in [(1, "VN-HN"), (1, "VN-SG"), (2, "s"), (4, NOW + DAY), (6, NOW), (7, PASS_ID)]
    )
    verdict = verifier.verify(signed(qg_es256, "QG1:", duplicated), NOW)
    assert verdict.reason is Reason.MALFORMED and verdict.detail == "claims"
