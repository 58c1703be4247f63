"""DCCs in the shapes real issuers sign, beyond schema 1.3: one test class per shape that was refused or let through.

Each pass is minted by the project's test issuer in the shape seen (qrgate_provisioning.dcc_test_issuer)
and verified through ``PassVerifier``. Lenient where the signature is good and the verdict does not
depend on the field; strict on what it does depend on.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from qrgate.passes import cwt, dcc
from qrgate.passes.authority import TrustAuthority, TrustState
from qrgate.passes.revocation import HashType, RevocationIndex, country_uci_hash, uci_hash
from qrgate.passes.signed_list import SignerKeys
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verdict import PassFormat, Reason, Verdict
from qrgate.passes.verifier import PassVerifier
from qrgate.trust_updates import TrustUpdates
from qrgate_provisioning.dcc_test_issuer import (
    fake_recovery_payload,
    fake_test_payload,
    fake_vaccination_payload,
    legacy_payload,
    new_dcc_test_issuer,
    new_dcc_test_issuer_with_eku,
)
from qrgate_provisioning.keys import IssuerKey, trust_entry, trust_file
from qrgate_provisioning.mint import mint_dcc_pass, sign1
from qrgate_provisioning.trustlist import build_trust_list, certificate_entry, new_list_signer, public_pem

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
ISSUER = new_dcc_test_issuer("ES256", NOW)
VERIFIER_STORE = TrustStore([TrustedKey.from_certificate(ISSUER.certificate, "test")])
VERIFIER = PassVerifier(VERIFIER_STORE)

TEST_OID, VACCINATION_OID, RECOVERY_OID = (f"1.3.6.1.4.1.1847.2021.1.{n}" for n in (1, 2, 3))
LEGACY_ARC = {TEST_OID: "1.3.6.1.4.1.0.1847.2021.1.1", VACCINATION_OID: "1.3.6.1.4.1.0.1847.2021.1.2",
              RECOVERY_OID: "1.3.6.1.4.1.0.1847.2021.1.3"}
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"


def payload_of(kind: str, ci: str = "URN:UVCI:01:VN:RW0001") -> dict[str, Any]:
    if kind == "v":
        return fake_vaccination_payload(ci, vaccinated_on="2025-11-01")
    if kind == "t":
        return fake_test_payload(ci, sampled_at="2025-12-31T10:00:00Z")
    return fake_recovery_payload(ci, first_positive="2025-11-01", valid_from="2025-11-12", valid_until="2026-04-30")


def mint(payload: dict[str, Any], signer: IssuerKey = ISSUER, **kwargs: Any) -> str:
    assert signer.certificate is not None
    return mint_dcc_pass(signer, signer.certificate, payload, NOW - 3600, NOW + 30 * DAY, **kwargs)


def verify(text: str, verifier: PassVerifier = VERIFIER) -> Verdict:
    return verifier.verify(text, NOW)


def assert_malformed(payload: dict[str, Any]) -> None:
    verdict = verify(mint(payload))
    assert (verdict.reason, verdict.detail) == (Reason.MALFORMED, "dcc_payload")


# --- schema 1.0.x: null for the absent groups, date-times where dates are specified ----------------------------


@pytest.mark.parametrize("kind", ["v", "t", "r"])
def test_a_schema_1_0_payload_with_null_groups_and_date_times_is_accepted(kind) -> None:
    payload = legacy_payload(payload_of(kind, f"URN:UVCI:01:VN:LEGACY-{kind}"))
    assert [group for group in ("v", "t", "r") if payload[group] is None] == [g for g in ("v", "t", "r") if g != kind]
    verdict = verify(mint(payload))
    assert verdict.accepted, verdict
    assert (verdict.format, verdict.pass_id, verdict.issuer) == (PassFormat.DCC, f"URN:UVCI:01:VN:LEGACY-{kind}", "VN")


def test_an_empty_group_beside_the_real_one_counts_as_absent() -> None:
    assert verify(mint(payload_of("v") | {"t": [], "r": None})).accepted


@pytest.mark.parametrize(
    "groups",
    [
        {"v": None, "t": None, "r": None},  # no group holds an entry: nothing to judge
        {"v": [], "t": None},
        {"t": [{"ci": "URN:UVCI:01:VN:T"}]},  # a vaccination and a test: judged as which?
        {"v": {"ci": "URN:UVCI:01:VN:V"}},  # a group that is not a list
        {"v": ["entry"]},
    ],
)
def test_a_payload_without_exactly_one_group_of_entries_is_malformed(groups) -> None:
    assert_malformed(payload_of("v") | groups)


def test_a_vaccination_series_dated_with_date_times_ranks_by_them() -> None:
    series = legacy_payload(vaccination_series([(1, "2025-06-01"), (2, "2025-07-01")]))
    assert verify(mint(series)).pass_id == "URN:UVCI:01:VN:DOSE2"


# --- several entries in "v": the issuer lists the whole series ----------------------------------------------------


def vaccination_series(doses: list[tuple[int, str]]) -> dict[str, Any]:
    """One payload whose ``v`` lists ``(dn, dt)`` entries in the order given, each with its own UCI."""
    template = fake_vaccination_payload("unused")["v"][0]
    entries = [template | {"dn": dn, "dt": given, "ci": f"URN:UVCI:01:VN:DOSE{dn}"} for dn, given in doses]
    return fake_vaccination_payload("unused") | {"v": entries}


def test_the_verdict_is_about_the_latest_dose_in_any_order() -> None:
    doses = [(1, "2021-06-01"), (2, "2021-07-01"), (3, "2022-01-10")]
    for seed in range(4):
        shuffled = doses[:]
        random.Random(seed).shuffle(shuffled)
        verdict = verify(mint(vaccination_series(shuffled)))
        assert verdict.accepted and verdict.pass_id == "URN:UVCI:01:VN:DOSE3", shuffled


def test_a_higher_dose_number_outranks_a_later_date() -> None:
    # A booster (dose 3) recorded before a corrected primary dose entry still is the latest dose.
    verdict = verify(mint(vaccination_series([(3, "2022-01-10"), (2, "2022-03-01")])))
    assert verdict.pass_id == "URN:UVCI:01:VN:DOSE3"


def test_among_equal_dose_numbers_the_latest_date_wins() -> None:
    payload = vaccination_series([(2, "2021-07-01"), (2, "2021-08-15")])
    payload["v"][1]["ci"] = "URN:UVCI:01:VN:DOSE2-CORRECTED"
    assert verify(mint(payload)).pass_id == "URN:UVCI:01:VN:DOSE2-CORRECTED"


def test_the_same_dose_listed_twice_is_one_dose() -> None:
    assert verify(mint(vaccination_series([(2, "2021-07-01"), (2, "2021-07-01")]))).accepted


@pytest.mark.parametrize(
    "change",
    [
        {"ci": "URN:UVCI:01:VN:OTHER"},  # two different entries that tie: which one is the verdict about?
        {"dn": "2"},  # the choice reads dn and dt of every entry
        {"dn": True},
        {"dn": 0},
        {"dt": "1 July 2021"},
        {"dt": None},
    ],
)
def test_a_series_the_choice_cannot_be_made_in_is_malformed(change) -> None:
    payload = vaccination_series([(2, "2021-07-01"), (2, "2021-07-01")])
    payload["v"][1] |= change
    assert_malformed(payload)


def test_a_single_entry_is_not_second_guessed() -> None:
    # One entry needs no choice: its dn/dt are the validation rules' to judge, not the decoder's.
    payload = fake_vaccination_payload("URN:UVCI:01:VN:ONE")
    payload["v"][0]["dt"] = "2021-07-01T00:00:00"
    assert verify(mint(payload)).accepted


def test_more_entries_than_any_series_are_malformed() -> None:
    assert_malformed(vaccination_series([(1 + n % 9, f"2021-{1 + n % 12:02d}-01") for n in range(17)]))


@pytest.mark.parametrize("kind", ["t", "r"])
def test_two_tests_or_two_recoveries_are_malformed(kind) -> None:
    payload = payload_of(kind)
    payload[kind] = payload[kind] * 2
    assert_malformed(payload)


def test_any_listed_dose_can_be_revoked() -> None:
    text = mint(vaccination_series([(1, "2021-06-01"), (2, "2021-07-01")]))
    for revoked in ("URN:UVCI:01:VN:DOSE1", "URN:UVCI:01:VN:DOSE2"):
        index = RevocationIndex.from_hashes({HashType.UCI: uci_hash(revoked)})
        verifier = PassVerifier(TrustAuthority(TrustState(VERIFIER_STORE, revoked=index)))
        assert verify(text, verifier).reason is Reason.REVOKED


# --- "iss" a ministry's name, not a country code -----------------------------------------------------------------


@pytest.mark.parametrize("iss", ["Ministry of Health of Viet Nam", "Bộ Y tế", "VNM", "", 46, None])
def test_an_iss_that_is_not_a_country_code_is_replaced_by_the_certificates_country(iss) -> None:
    verdict = verify(_mint_with_iss(payload_of("v"), iss))
    assert verdict.accepted and verdict.issuer == "VN"  # the free text is never kept


def _mint_with_iss(payload: dict[str, Any], iss: object) -> str:
    """A pass whose ``iss`` claim is ``iss`` exactly (absent for None), signed by ISSUER."""
    claims: dict[int, Any] = {cwt.IAT: NOW - 3600, cwt.EXP: NOW + 30 * DAY, dcc.HCERT: {dcc.EU_DCC_V1: payload}}
    if iss is not None:
        claims[cwt.ISS] = iss
    message = sign1(ISSUER, cbor2.dumps(claims), kid=ISSUER.kid)
    return dcc.PREFIX + base45.b45encode(zlib.compress(message)).decode()


def test_a_lower_case_country_code_is_kept_upper_case() -> None:
    assert verify(_mint_with_iss(payload_of("v"), "vn")).issuer == "VN"


def test_an_iss_country_code_outranks_the_certificates() -> None:
    assert verify(_mint_with_iss(payload_of("v"), "DE")).issuer == "DE"


def test_without_a_country_anywhere_the_issuer_is_unknown_but_the_pass_is_accepted() -> None:
    nameless = new_dcc_test_issuer_with_eku("ES256", NOW, [SERVER_AUTH], country=None)
    verifier = PassVerifier(TrustStore([TrustedKey.from_certificate(nameless.certificate, "test")]))
    verdict = verify(mint(payload_of("v"), nameless, issuer="Ministry of Health"), verifier)
    assert verdict.accepted and verdict.issuer is None


def test_a_country_uci_revocation_uses_the_certificates_country_when_iss_is_a_name() -> None:
    text = _mint_with_iss(payload_of("v", "URN:UVCI:01:VN:REVOKED"), "Ministry of Health of Viet Nam")
    index = RevocationIndex.from_hashes({HashType.COUNTRY_UCI: country_uci_hash("VN", "URN:UVCI:01:VN:REVOKED")})
    verifier = PassVerifier(TrustAuthority(TrustState(VERIFIER_STORE, revoked=index)))
    assert verify(text, verifier).reason is Reason.REVOKED


# --- Extended Key Usage: which types a DSC may sign ---------------------------------------------------------------


OID_OF = {"t": TEST_OID, "v": VACCINATION_OID, "r": RECOVERY_OID}


@pytest.mark.parametrize("kind", ["v", "t", "r"])
@pytest.mark.parametrize("allowed", [("v",), ("t",), ("r",), ("t", "r"), ("v", "t", "r")])
@pytest.mark.parametrize("arc", ["current", "legacy"])
def test_a_dcc_eku_allows_exactly_the_types_it_lists(kind, allowed, arc) -> None:
    purposes = [OID_OF[t] if arc == "current" else LEGACY_ARC[OID_OF[t]] for t in allowed]
    signer = new_dcc_test_issuer_with_eku("ES256", NOW, [SERVER_AUTH, *purposes])
    verdict = verify(mint(payload_of(kind), signer), PassVerifier(store_of(signer)))
    if kind in allowed:
        assert verdict.accepted, verdict
    else:
        assert (verdict.reason, verdict.detail) == (Reason.UNKNOWN_ISSUER, "key_usage")


@pytest.mark.parametrize("purposes", [[], [SERVER_AUTH]], ids=["empty EKU", "no DCC purpose"])
@pytest.mark.parametrize("kind", ["v", "t", "r"])
def test_an_eku_naming_no_dcc_type_lets_the_key_sign_every_type(purposes, kind) -> None:
    signer = new_dcc_test_issuer_with_eku("ES256", NOW, purposes)
    assert verify(mint(payload_of(kind), signer), PassVerifier(store_of(signer))).accepted


def store_of(*issuers: IssuerKey) -> TrustStore:
    return TrustStore([TrustedKey.from_certificate(issuer.certificate, "test") for issuer in issuers])


@pytest.mark.parametrize("order", ["certificate first", "key file first"])
def test_a_key_trusted_twice_under_one_kid_keeps_its_certificates_limit(order, tmp_path: Path) -> None:
    # The DSC (tests only) is also listed as a bare public key in a JSON key file, under the same kid:
    # whichever the store tries first, the certificate's Extended Key Usage still holds.
    signer = new_dcc_test_issuer_with_eku("ES256", NOW, [TEST_OID])
    (tmp_path / "dsc.json").write_text(trust_file([trust_entry(signer, formats=["dcc"])]))
    (tmp_path / "dsc.pem").write_bytes(signer.certificate.public_bytes(serialization.Encoding.PEM))
    paths = [tmp_path / "dsc.pem", tmp_path / "dsc.json"]
    store = TrustStore.from_paths(paths if order == "certificate first" else paths[::-1])
    assert len(store.keys_for(signer.kid)) == 2
    verifier = PassVerifier(store)
    assert verify(mint(payload_of("t"), signer), verifier).accepted
    refused = verify(mint(payload_of("v"), signer), verifier)
    assert (refused.reason, refused.detail) == (Reason.UNKNOWN_ISSUER, "key_usage")


def test_a_certificate_delivered_in_a_signed_trust_list_keeps_its_eku(tmp_path: Path) -> None:
    list_signer = new_list_signer("EdDSA")
    (tmp_path / "pins").mkdir()
    (tmp_path / "pins" / "list.pem").write_bytes(public_pem(list_signer))
    updates = TrustUpdates(tmp_path / "state", provisioned_signers=SignerKeys.from_pem_dir(tmp_path / "pins"),
                           static_store=TrustStore())
    recovery_only = new_dcc_test_issuer_with_eku("PS256", NOW, [RECOVERY_OID])
    empty_eku = new_dcc_test_issuer_with_eku("ES256", NOW, [])
    document = build_trust_list(list_signer, [certificate_entry(recovery_only.certificate),
                                              certificate_entry(empty_eku.certificate)],
                                version=1, issued_at=NOW, expires_at=NOW + DAY)
    assert updates.offer(document, "test", NOW).accepted
    verifier = PassVerifier(updates.authority)
    assert verify(mint(payload_of("r"), recovery_only), verifier).accepted
    assert verify(mint(payload_of("v"), recovery_only), verifier).reason is Reason.UNKNOWN_ISSUER
    assert all(verify(mint(payload_of(kind), empty_eku), verifier).accepted for kind in "vtr")
