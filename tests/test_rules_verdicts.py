"""Validation rules in the verdict: a genuine, in-force, unrevoked DCC must still meet the rule set in force.

The passes are minted by the project's test DCC issuer (qrgate_provisioning.dcc_test_issuer) and judged by
the built-in rule set (Vietnam's 2021-22 policy) through ``PassVerifier.verify``; the gate's stored event
is covered in tests/test_gate.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from qrgate.passes import cwt, dcc
from qrgate.passes.authority import TrustAuthority, TrustState
from qrgate.passes.clock_policy import apply_clock_policy
from qrgate.passes.cose import decode_sign1, verifying_keys
from qrgate.passes.revocation import HashType, RevocationIndex, uci_hash
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verdict import PassFormat, Reason, Verdict
from qrgate.passes.verifier import PassVerifier
from qrgate.rules.policy import builtin_rule_set
from qrgate_provisioning.dcc_test_issuer import (
    RULE_CASE_REASONS,
    dcc_rule_payloads,
    fake_vaccination_payload,
    iso_date,
    legacy_payload,
    new_dcc_test_issuer,
)
from qrgate_provisioning.keys import new_issuer_key
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
ISSUER = new_dcc_test_issuer("PS256", NOW)
QG_ISSUER = new_issuer_key("VN-HN", "EdDSA")
STORE = TrustStore([
    TrustedKey.from_certificate(ISSUER.certificate, "test"),
    TrustedKey(kid=QG_ISSUER.kid, alg=-8, public_key=QG_ISSUER.private_key.public_key(), source="test"),
])
RULES = builtin_rule_set()
VERIFIER = PassVerifier(TrustAuthority.of_store(STORE, RULES))
PAYLOADS = dcc_rule_payloads(NOW)
RULE_ID = re.compile(r"[GVTRI]R-VN-\d{4}")


def mint(payload: dict[str, Any], *, iat: int = NOW - 3600, exp: int = NOW + 30 * DAY) -> str:
    return mint_dcc_pass(ISSUER, ISSUER.certificate, payload, iat, exp)


def uci_of(payload: dict[str, Any]) -> str:
    return next(payload[group][0]["ci"] for group in ("v", "t", "r") if group in payload)


# --- each case, refused with its reason or accepted -------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(RULE_CASE_REASONS))
def test_each_case_gets_its_reason_from_the_builtin_rules(case) -> None:
    verdict = VERIFIER.verify(mint(PAYLOADS[case]), NOW)
    assert verdict.reason == RULE_CASE_REASONS[case], verdict
    assert (verdict.format, verdict.pass_id, verdict.issuer) == (PassFormat.DCC, uci_of(PAYLOADS[case]), "VN")
    assert verdict.rules_version == RULES.version and verdict.rules_read_clock
    if verdict.accepted:
        assert verdict.detail is None
    else:
        assert RULE_ID.fullmatch(verdict.detail), verdict.detail  # the failing rule's Identifier


@pytest.mark.parametrize(("case", "rule"), [
    ("test_positive", "TR-VN-0002"), ("vaccination_incomplete", "VR-VN-0002"),
    ("test_too_old_pcr", "TR-VN-0004"), ("test_too_old_rapid", "TR-VN-0005"), ("recovery_expired", "RR-VN-0002"),
])
def test_the_detail_names_the_rule_that_failed(case, rule) -> None:
    assert VERIFIER.verify(mint(PAYLOADS[case]), NOW).detail == rule


def test_a_product_the_province_does_not_accept_is_refused() -> None:
    payload = fake_vaccination_payload("URN:UVCI:01:VN:SPUTNIK", vaccinated_on=iso_date(NOW - 60 * DAY),
                                       product="Sputnik-V")
    verdict = VERIFIER.verify(mint(payload), NOW)
    assert (verdict.reason, verdict.detail) == (Reason.PRODUCT_NOT_ACCEPTED, "VR-VN-0001")


def test_a_refused_verdict_carries_nothing_of_the_certificate() -> None:
    verdict = VERIFIER.verify(mint(PAYLOADS["test_positive"]), NOW)
    text = repr(verdict)
    for personal in ("Nguy", "NGUYEN", "1990", "260373001", "LP6464-4", "Trung tâm"):
        assert personal not in text
    assert verdict.subject_id is None and verdict.initials is None


def test_the_payload_the_verifier_holds_is_never_printed() -> None:
    sign1 = decode_sign1(dcc.cose_message(mint(PAYLOADS["test_positive"])[4:]))
    contents = dcc.read_contents(cwt.decode_claims(sign1.payload), verifying_keys(sign1, STORE.keys_for(sign1.kid)))
    assert contents.dcc_payload is not None and contents.dcc_payload["nam"]["fn"] == "Nguyễn"
    assert "Nguy" not in repr(contents) and "1990" not in repr(contents)


# --- what the rules read: the normalised payload ---------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(RULE_CASE_REASONS))
def test_a_schema_1_0_payload_is_judged_as_its_1_3_twin(case) -> None:
    # null groups and date-times where dates are specified: the same verdict as the 1.3.0 payload.
    assert VERIFIER.verify(mint(legacy_payload(PAYLOADS[case])), NOW).reason == RULE_CASE_REASONS[case]


def series(*doses: tuple[int, int, float]) -> dict[str, Any]:
    """A vaccination payload listing ``(dn, sd, days ago)`` entries in the given order."""
    entries = [fake_vaccination_payload(f"URN:UVCI:01:VN:D{dn}-{sd}", vaccinated_on=iso_date(NOW - ago * DAY),
                                        dose=dn, doses=sd)["v"][0] for dn, sd, ago in doses]
    return fake_vaccination_payload("unused") | {"v": entries}


def test_a_listed_series_is_judged_by_its_latest_dose() -> None:
    # Dose 1 of 2 listed after dose 2 of 2: the holder is fully vaccinated, whatever the order.
    verdict = VERIFIER.verify(mint(series((2, 2, 60), (1, 2, 90))), NOW)
    assert verdict.accepted and verdict.pass_id == "URN:UVCI:01:VN:D2-2"


def test_a_series_whose_latest_dose_is_incomplete_is_refused() -> None:
    verdict = VERIFIER.verify(mint(series((1, 3, 120), (2, 3, 60))), NOW)
    assert (verdict.reason, verdict.pass_id) == (Reason.VACCINATION_INCOMPLETE, "URN:UVCI:01:VN:D2-3")


def test_a_booster_is_judged_on_its_own_date() -> None:
    # The primary series is over a year old (expired on its own); the booster 30 days ago is what counts.
    assert VERIFIER.verify(mint(series((1, 2, 500), (2, 2, 450), (3, 3, 30))), NOW).accepted
    assert VERIFIER.verify(mint(series((1, 2, 500), (2, 2, 450))), NOW).reason is Reason.VACCINATION_EXPIRED


# --- when the rules apply ------------------------------------------------------------------------------------------


def test_without_a_rule_set_every_genuine_case_is_accepted() -> None:
    verifier = PassVerifier(TrustAuthority.of_store(STORE))
    for case, payload in PAYLOADS.items():
        verdict = verifier.verify(mint(payload), NOW)
        assert verdict.accepted and verdict.rules_version is None and not verdict.rules_read_clock, case


def test_the_dates_and_revocation_outrank_the_rules() -> None:
    positive = PAYLOADS["test_positive"]
    expired = VERIFIER.verify(mint(positive, iat=NOW - 10 * DAY, exp=NOW - DAY), NOW)
    assert (expired.reason, expired.rules_version) == (Reason.EXPIRED, None)
    revoked_index = RevocationIndex.from_hashes({HashType.UCI: uci_hash(uci_of(positive))})
    authority = TrustAuthority(TrustState(STORE, revoked=revoked_index, rules=RULES))
    revoked = PassVerifier(authority).verify(mint(positive), NOW)
    assert (revoked.reason, revoked.rules_version) == (Reason.REVOKED, None)


def test_the_rules_never_judge_a_qrgate_pass() -> None:
    text = mint_qrgate_pass(QG_ISSUER, "VN-HN", b"\x05" * 16, "subj-5", NOW - 60, NOW + DAY)
    verdict = VERIFIER.verify(text, NOW)
    assert verdict.accepted and verdict.rules_version is None


def test_the_rules_judge_at_the_verification_time() -> None:
    # The same negative PCR test: accepted a day after its sample, too old four days after.
    text = mint(PAYLOADS["test_negative_pcr"])
    assert VERIFIER.verify(text, NOW).accepted
    assert VERIFIER.verify(text, NOW + 3 * DAY).reason is Reason.TEST_TOO_OLD


# --- the clock-honesty policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(RULE_CASE_REASONS))
def test_under_refuse_a_rule_verdict_that_read_the_clock_is_not_believed(case) -> None:
    verdict = VERIFIER.verify(mint(PAYLOADS[case]), NOW)
    refused = apply_clock_policy(verdict, synchronised=False, policy="refuse")
    assert (refused.reason, refused.detail) == (Reason.CLOCK_UNSYNCHRONISED, "clock")
    assert refused.pass_id == verdict.pass_id
    assert apply_clock_policy(verdict, synchronised=False, policy="accept_and_flag") == verdict
    assert apply_clock_policy(verdict, synchronised=True, policy="refuse") == verdict


def test_under_refuse_a_rule_verdict_that_read_no_clock_stands() -> None:
    timeless = Verdict(Reason.TEST_POSITIVE, PassFormat.DCC, detail="TR-VN-0002", rules_version=3)
    assert apply_clock_policy(timeless, synchronised=False, policy="refuse") == timeless
    timed = Verdict(Reason.TEST_POSITIVE, PassFormat.DCC, detail="TR-VN-0002", rules_version=3, rules_read_clock=True)
    assert apply_clock_policy(timed, synchronised=False, policy="refuse").reason is Reason.CLOCK_UNSYNCHRONISED
