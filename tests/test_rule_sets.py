"""The validation rules as data: the built-in Vietnam 2021-22 rule set judged on DCC payloads (one test per reason
and its accepted counterpart), which rules apply (type, country, validity window, versions, invalidation), and
what refuses a rule set when it is read (the CertLogic validation suite's invalid expressions, every format fault).

Payloads are written here as JSON dicts with the EU DCC schema 1.3.0 field names; the clock is fixed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from qrgate.passes.signed_list import ListOutcome, ListRefused, SignerKey, SignerKeys
from qrgate.passes.verdict import Reason
from qrgate.rules.policy import RuleOutcome, RuleSet, RuleSetError, builtin_rule_set, load_rule_set
from qrgate.rules.rule_set import MAX_LOGIC_DEPTH, MAX_RULES, RULE_REASONS, parse_content
from qrgate_provisioning.trustlist import build_rule_set, new_list_signer, spki

VALIDATION_SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "certlogic" / "validation-testSuite"
BUILTIN = Path(__file__).resolve().parents[1] / "edge" / "qrgate" / "data" / "rules-vn-2021.json"


def epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp())


AT = epoch("2022-01-15T12:00:00+00:00")
HOUR, DAY = 3_600, 86_400


def vaccination(**entry: Any) -> dict[str, Any]:
    return {"ver": "1.3.0", "nam": {"fn": "Nguyễn", "fnt": "NGUYEN", "gn": "Thử", "gnt": "THU"}, "dob": "1990-01-01",
            "v": [{"tg": "840539006", "vp": "J07BX03", "mp": "EU/1/20/1528", "ma": "ORG-100030215", "dn": 2, "sd": 2,
                   "dt": "2021-12-01", "co": "VN", "is": "Ministry of Health", "ci": "URN:UVCI:01:VN:V1", **entry}]}


def lab_test(hours_ago: float = 48, **entry: Any) -> dict[str, Any]:
    sample = dt.datetime.fromtimestamp(AT - hours_ago * HOUR, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"ver": "1.3.0", "nam": {"fnt": "NGUYEN"}, "dob": "1990",
            "t": [{"tg": "840539006", "tt": "LP6464-4", "nm": "PCR", "sc": sample, "tr": "260415000", "tc": "Bach Mai",
                   "co": "VN", "is": "Ministry of Health", "ci": "URN:UVCI:01:VN:T1", **entry}]}


def recovery(**entry: Any) -> dict[str, Any]:
    return {"ver": "1.3.0", "nam": {"fnt": "NGUYEN"}, "dob": "1990-01",
            "r": [{"tg": "840539006", "fr": "2021-11-01", "df": "2021-11-12", "du": "2022-04-30", "co": "VN",
                   "is": "Ministry of Health", "ci": "URN:UVCI:01:VN:R1", **entry}]}


def judge(payload: dict[str, Any], at: float = AT, rules: RuleSet | None = None,
          country: str | None = "VN") -> RuleOutcome:
    return (rules or builtin_rule_set()).judge(payload, at=at, iat=int(at) - DAY, exp=int(at) + 30 * DAY,
                                               country=country)


# --- the built-in rule set, reason by reason ------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "reason", "rule_id"), [
    (vaccination(), Reason.ACCEPTED, None),
    (vaccination(dn=3, sd=3), Reason.ACCEPTED, None),  # a booster
    (vaccination(mp="EU/1/20/1525", dn=1, sd=1), Reason.ACCEPTED, None),  # Janssen, one dose
    (vaccination(mp="BBIBP-CorV"), Reason.ACCEPTED, None),
    (vaccination(dn=1, sd=2), Reason.VACCINATION_INCOMPLETE, "VR-VN-0002"),
    (vaccination(dn=0, sd=0), Reason.VACCINATION_INCOMPLETE, "VR-VN-0002"),
    (vaccination(dn="2"), Reason.VACCINATION_INCOMPLETE, "VR-VN-0002"),  # not an integer: the rule cannot pass
    (vaccination(mp="Sputnik-V"), Reason.PRODUCT_NOT_ACCEPTED, "VR-VN-0001"),
    (vaccination(mp="Sputnik-V", dn=1), Reason.PRODUCT_NOT_ACCEPTED, "VR-VN-0001"),  # the lower number first
    (vaccination(dt="2022-01-05"), Reason.VACCINATION_NOT_YET_VALID, "VR-VN-0003"),  # 10 days
    (vaccination(dt="2022-01-01"), Reason.ACCEPTED, None),  # 14.5 days
    (vaccination(dt="2021-01-10"), Reason.VACCINATION_EXPIRED, "VR-VN-0004"),  # 370 days
    (vaccination(dt="2021-01-20"), Reason.ACCEPTED, None),  # 360 days
    (vaccination(tg="840539007"), Reason.RULE_FAILED, "GR-VN-0001"),  # not COVID-19
    (lab_test(), Reason.ACCEPTED, None),
    (lab_test(tr="260373001"), Reason.TEST_POSITIVE, "TR-VN-0002"),
    (lab_test(hours_ago=30 * 24, tr="260373001"), Reason.TEST_POSITIVE, "TR-VN-0002"),  # positive outranks too old
    (lab_test(hours_ago=73), Reason.TEST_TOO_OLD, "TR-VN-0004"),
    (lab_test(hours_ago=71), Reason.ACCEPTED, None),
    (lab_test(hours_ago=25, tt="LP217198-3"), Reason.TEST_TOO_OLD, "TR-VN-0005"),
    (lab_test(hours_ago=23, tt="LP217198-3"), Reason.ACCEPTED, None),
    (lab_test(tt="LP217198-3", sc="2022-01-15T10:00:00+07:00"), Reason.ACCEPTED, None),  # 9 h, local time with offset
    (lab_test(tt="LP217198-3", sc="2022-01-14T18:00:00+07:00"), Reason.TEST_TOO_OLD, "TR-VN-0005"),  # 25 h
    (lab_test(tt="94558-4"), Reason.TEST_NOT_ACCEPTED, "TR-VN-0001"),
    (lab_test(tr="unknown"), Reason.RULE_FAILED, "TR-VN-0003"),
    (recovery(), Reason.ACCEPTED, None),
    (recovery(df="2022-01-20"), Reason.RECOVERY_NOT_YET_VALID, "RR-VN-0001"),
    (recovery(du="2022-01-10"), Reason.RECOVERY_EXPIRED, "RR-VN-0002"),
    (recovery(du="2022-01-15"), Reason.ACCEPTED, None),  # valid through its last day
    (recovery(fr="2021-07-09", df="2021-07-20", du="2022-06-30"), Reason.RECOVERY_EXPIRED, "RR-VN-0003"),  # 190 days
    # Date-times where dates are specified, as Singapore's issuer writes them.
    (recovery(fr="2022-01-01T00:00:00.000Z", df="2022-01-08T00:00:00.000Z", du="2022-06-30T00:00:00.000Z"),
     Reason.ACCEPTED, None),
])
def test_the_builtin_rules_give_each_reason(payload, reason, rule_id) -> None:
    outcome = judge(payload)
    assert (outcome.reason, outcome.rule_id) == (reason, rule_id)
    assert outcome.depends_on_clock and outcome.accepted is (reason is Reason.ACCEPTED)


def test_the_builtin_set_is_the_shipped_file_and_names_a_reason_for_every_rule() -> None:
    rules = builtin_rule_set()
    assert rules is builtin_rule_set()  # read once
    assert (rules.version, rules.country, rules.signed, rules.digest, rules.age_s(AT)) == (0, "VN", False, None, None)
    assert len(rules) == len(json.loads(BUILTIN.read_text())["rules"]) == 13
    assert {rule.reason for rule in rules.rules} <= RULE_REASONS
    assert {Reason.TEST_POSITIVE, Reason.TEST_TOO_OLD, Reason.VACCINATION_INCOMPLETE, Reason.PRODUCT_NOT_ACCEPTED,
            Reason.VACCINATION_NOT_YET_VALID, Reason.VACCINATION_EXPIRED, Reason.RECOVERY_EXPIRED,
            Reason.RECOVERY_NOT_YET_VALID} <= {rule.reason for rule in rules.rules}
    assert "EU/1/21/1529" in rules.value_sets["vn-accepted-vaccines"]  # Vaxzevria: Vietnam's own QA sample


def test_the_latest_entry_of_a_group_decides() -> None:
    first, second = vaccination(dn=1, dt="2021-11-01")["v"][0], vaccination(dn=2, dt="2021-12-01")["v"][0]
    for entries in ([first, second], [second, first]):
        assert judge({**vaccination(), "v": entries}).accepted
    old_test, new_positive = lab_test(hours_ago=60)["t"][0], lab_test(hours_ago=2, tr="260373001")["t"][0]
    assert judge({**lab_test(), "t": [new_positive, old_test]}).reason is Reason.TEST_POSITIVE


@pytest.mark.parametrize("payload", [
    {"ver": "1.3.0"},  # no group at all
    {**vaccination(), **lab_test()},  # two types at once: which one would the rules judge?
    {**vaccination(), "v": {"dn": 2, "sd": 2}},  # not an array: the rules' "v.0" would read null and pass
    {**vaccination(), "v": ["not an entry"]},
])
def test_a_payload_without_exactly_one_type_is_not_accepted(payload) -> None:
    assert judge(payload) == RuleOutcome(Reason.CERTIFICATE_TYPE_NOT_ACCEPTED, None, False)


def test_schema_1_0_payloads_with_null_groups_are_judged_on_the_group_they_have() -> None:
    assert judge({**vaccination(), "t": None, "r": None}).accepted
    assert judge({**lab_test(tr="260373001"), "v": None, "r": []}).reason is Reason.TEST_POSITIVE


def test_judging_survives_absurd_dates_and_values() -> None:
    rules = builtin_rule_set()
    for exp in (10**12, 10**300, -(10**300)):
        assert rules.judge(vaccination(), at=AT, iat=AT, exp=exp, country=None).accepted
    assert judge(vaccination(dt="2021-13-45")).reason is Reason.VACCINATION_NOT_YET_VALID
    assert judge(vaccination(dt=None)).reason is Reason.VACCINATION_NOT_YET_VALID
    assert judge(lab_test(sc=12345)).reason is Reason.TEST_TOO_OLD
    assert judge(vaccination(), at=10**300).reason is Reason.ACCEPTED  # no rule in force at that time


# --- which rules apply ---------------------------------------------------------------------------------------------


def rule(identifier: str, logic: Any, reason: str = "rule_failed", **fields: Any) -> dict[str, Any]:
    kind = {"GR": "General", "VR": "Vaccination", "TR": "Test", "RR": "Recovery", "IR": "General"}[identifier[:2]]
    made = {"Identifier": identifier, "Type": "Invalidation" if identifier.startswith("IR") else "Acceptance",
            "Country": identifier[3:5], "Version": "1.0.0", "SchemaVersion": "1.0.0", "Engine": "CERTLOGIC",
            "EngineVersion": "1.0.0", "CertificateType": kind, "Description": [{"lang": "en", "desc": "a rule"}],
            "ValidFrom": "2021-07-01T00:00:00Z", "ValidTo": "2030-06-01T00:00:00Z", "AffectedFields": ["v.0"],
            "Logic": logic, "Reason": reason}
    made.update(fields)
    return made


def content(*rules: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"country": "VN", "value_sets": {"products": ["EU/1/20/1528"]}, "rules": list(rules), **extra})


def rule_set(*rules: dict[str, Any], **extra: Any) -> RuleSet:
    return RuleSet(parse_content(content(*rules, **extra)), "test")


PCR_WITHIN = lambda hours: {"before": [{"plusTime": [{"var": "external.validationClock"}, 0, "hour"]},  # noqa: E731
                                       {"plusTime": [{"var": "payload.t.0.sc"}, hours, "hour"]}]}


def test_the_newest_version_whose_window_holds_the_clock_is_the_one_applied() -> None:
    rules = rule_set(rule("TR-VN-0001", PCR_WITHIN(72), "test_too_old"),
                     rule("TR-VN-0001", PCR_WITHIN(48), "test_too_old", Version="1.1.0",
                          ValidFrom="2022-01-10T00:00:00Z"),
                     rule("TR-VN-0001", PCR_WITHIN(1), "test_too_old", Version="0.9.0"))
    sixty_hours = lab_test(hours_ago=60)
    assert judge(sixty_hours, rules=rules).reason is Reason.TEST_TOO_OLD  # 1.1.0, in force since 2022-01-10
    assert judge(lab_test(hours_ago=60 - 10 * 24), at=AT - 10 * DAY, rules=rules).accepted  # 1.0.0, the newest then


def test_rules_outside_their_window_do_not_apply_and_other_types_rules_are_not_evaluated() -> None:
    rules = rule_set(rule("VR-VN-0001", False, ValidFrom="2022-02-01T00:00:00Z"), rule("TR-VN-0001", False))
    assert judge(vaccination(), rules=rules) == RuleOutcome(Reason.ACCEPTED, None, True)  # the window used the clock
    assert judge(vaccination(), at=epoch("2022-03-01T00:00:00+00:00"), rules=rules).rule_id == "VR-VN-0001"
    assert judge(recovery(), rules=rules) == RuleOutcome(Reason.ACCEPTED, None, False)  # no rule of that type


def test_general_and_invalidation_rules_come_first_and_invalidation_is_by_issuing_country() -> None:
    rules = rule_set(rule("VR-VN-0001", False, "vaccination_incomplete"), rule("GR-VN-0009", False, "rule_failed"),
                     rule("IR-DE-0001", False, "certificate_type_not_accepted"))
    assert judge(vaccination(), rules=rules).rule_id == "GR-VN-0009"
    assert judge(vaccination(), rules=rules, country="DE").rule_id == "IR-DE-0001"
    assert judge(lab_test(), rules=rules, country="DE").rule_id == "IR-DE-0001"  # a General invalidation: every type


def test_an_evaluation_error_or_a_result_that_is_not_true_fails_the_rule() -> None:
    rules = rule_set(rule("VR-VN-0001", {"in": [{"var": "payload.v.0.mp"}, {"var": "payload.v.0.nothing"}]}))
    assert judge(vaccination(), rules=rules).reason is Reason.RULE_FAILED  # nothing is in a missing array
    error = rule_set(rule("VR-VN-0001", {"before": [{"var": "payload.v.0.dn"}, 3]}))  # a number is no date-time
    assert judge(vaccination(), rules=error).rule_id == "VR-VN-0001"
    assert judge(vaccination(), rules=rule_set(rule("VR-VN-0001", {"var": "payload.v.0.dn"}))).rule_id == "VR-VN-0001"
    products = rule_set(rule("VR-VN-0001", {"in": [{"var": "payload.v.0.mp"}, {"var": "external.valueSets.products"}]}))
    assert judge(vaccination(), rules=products).accepted


def test_the_rules_see_the_external_context() -> None:
    reads = rule_set(rule("VR-VN-0001", {"and": [
        {"===": [{"var": "external.countryCode"}, "VN"]}, {"===": [{"var": "external.issuerCountryCode"}, "SG"]},
        {"after": [{"plusTime": [{"var": "external.exp"}, 0, "day"]},
                   {"plusTime": [{"var": "external.iat"}, 0, "day"]}]},
    ]}))
    assert judge(vaccination(), rules=reads, country="SG").accepted
    assert not judge(vaccination(), rules=reads, country="VN").accepted


# --- what refuses a rule set ---------------------------------------------------------------------------------------


def validation_cases() -> list[tuple[str, Any, bool]]:
    if not VALIDATION_SUITE.is_dir():
        pytest.skip(f"CertLogic validation suite not found at {VALIDATION_SUITE}")
    cases = []
    for path in sorted(VALIDATION_SUITE.glob("*.json")):
        for index, case in enumerate(json.loads(path.read_text())["cases"]):
            cases.append((f"{path.stem}[{index}]", case["certLogicExpression"], bool(case.get("issues"))))
    return cases


def test_a_rule_reading_a_value_set_the_rule_set_does_not_carry_refuses_the_whole_set() -> None:
    # Negated, "not in a missing list" would let every product through: refused at load, not at the gate.
    reads_absent = {"!": [{"in": [{"var": "payload.v.0.mp"}, {"var": "external.valueSets.absent"}]}]}
    with pytest.raises(ListRefused) as refused:
        parse_content(content(rule("VR-VN-0001", True), rule("VR-VN-0002", reads_absent)))
    assert refused.value.outcome is ListOutcome.MALFORMED
    assert refused.value.detail == ("rules[1] VR-VN-0002 v1.0.0: reads value set absent, "
                                    "which the rule set does not carry")


def test_every_invalid_expression_of_the_validation_suite_refuses_the_rule_set_naming_the_rule() -> None:
    cases = validation_cases()
    assert sum(invalid for _, _, invalid in cases) == 14  # the suite as shipped: 14 invalid, 9 valid
    for name, expression, invalid in cases:
        text = content(rule("VR-VN-0001", True), rule("TR-VN-0007", expression))
        if invalid:
            with pytest.raises(ListRefused) as refused:
                parse_content(text)
            assert refused.value.outcome is ListOutcome.MALFORMED, name
            assert refused.value.detail.startswith("rules[1] TR-VN-0007: Logic is not valid CertLogic"), name
        else:
            assert len(parse_content(text).rules) == 2, name


def with_rule(**changes: Any) -> str:
    return content(rule("VR-VN-0001", True, **changes))


@pytest.mark.parametrize(("text", "outcome", "detail"), [
    (with_rule(Reason="accepted"), ListOutcome.MALFORMED, "VR-VN-0001: Reason must be one of"),
    (with_rule(Reason="no_such_reason"), ListOutcome.MALFORMED, "Reason must be one of"),
    (with_rule(Region="HN"), ListOutcome.MALFORMED, "unknown field(s) Region"),
    (with_rule(Identifier="VR-VN-1"), ListOutcome.MALFORMED, "rules[0]: Identifier must look like"),
    (with_rule(Country="DE"), ListOutcome.MALFORMED, "Country must be VN"),
    (content(rule("VR-DE-0001", True)), ListOutcome.MALFORMED, "an Acceptance rule of DE in a rule set of VN"),
    (with_rule(CertificateType="Test"), ListOutcome.MALFORMED, "CertificateType must be Vaccination"),
    (with_rule(Type="Invalidation"), ListOutcome.MALFORMED, "Type must be"),
    (with_rule(Engine="JSONLOGIC"), ListOutcome.MALFORMED, "Engine must be CERTLOGIC"),
    (with_rule(EngineVersion="2.0.0"), ListOutcome.MALFORMED, "CertLogic 1.x"),
    (with_rule(Version="1.0"), ListOutcome.MALFORMED, "Version must be a version like 1.0.0"),
    (with_rule(ValidFrom="2021-07-01"), ListOutcome.MALFORMED, "ValidFrom must be a date-time"),
    (with_rule(ValidTo="2021-07-01T00:00:00"), ListOutcome.MALFORMED,
     "ValidTo must be a date-time with its UTC offset"),
    (with_rule(ValidTo="2021-06-01T00:00:00Z"), ListOutcome.MALFORMED, "ValidTo is not after ValidFrom"),
    (with_rule(AffectedFields=[]), ListOutcome.MALFORMED, "AffectedFields"),
    (with_rule(Description="complete"), ListOutcome.MALFORMED, "Description must be"),
    (content(rule("VR-VN-0001", True), rule("VR-VN-0001", False)), ListOutcome.MALFORMED,
     "rules[1] VR-VN-0001 v1.0.0: that identifier and version twice"),
    (content(*(rule(f"VR-VN-{n:04d}", True) for n in range(MAX_RULES + 1))), ListOutcome.TOO_LARGE, "rules, at most"),
    (with_rule(Logic=json.loads("[" * MAX_LOGIC_DEPTH + "true" + "]" * MAX_LOGIC_DEPTH)), ListOutcome.TOO_LARGE,
     "VR-VN-0001: Logic larger than"),
    (content(country="Vietnam"), ListOutcome.MALFORMED, "country must be two capital letters"),
    (content(value_sets={"products": "EU/1/20/1528"}), ListOutcome.MALFORMED, "value_sets.products: must be an array"),
    (content(rules=[], signature="x"), ListOutcome.MALFORMED, "unknown field(s) signature"),
    ('{"country": "VN", "country": "DE", "rules": []}', ListOutcome.MALFORMED, "duplicate key 'country'"),
    ('{"country": "VN", "rules": [NaN]}', ListOutcome.MALFORMED, "NaN is not JSON"),
    ("[" * 100_000, ListOutcome.MALFORMED, "content"),
    ('{"country": "VN", "rules": []', ListOutcome.MALFORMED, "content is not JSON"),
])
def test_a_fault_anywhere_refuses_the_whole_rule_set(text, outcome, detail) -> None:
    with pytest.raises(ListRefused) as refused:
        parse_content(text)
    assert refused.value.outcome is outcome and detail in refused.value.detail


# --- rule-set files --------------------------------------------------------------------------------------------------


SIGNER, STRANGER = new_list_signer("EdDSA"), new_list_signer("ES256")
SIGNERS = SignerKeys([SignerKey.from_spki(spki(SIGNER), "test")])


def test_load_rule_set_reads_json_and_signed_files(tmp_path) -> None:
    plain = tmp_path / "policy.json"
    plain.write_text(BUILTIN.read_text())
    loaded = load_rule_set(plain)
    assert (loaded.version, loaded.signed, len(loaded)) == (0, False, 13)
    assert judge(lab_test(tr="260373001"), rules=loaded).reason is Reason.TEST_POSITIVE

    signed = tmp_path / "policy.cose"
    signed.write_bytes(build_rule_set(SIGNER, BUILTIN.read_text(), version=4, issued_at=AT, expires_at=AT + DAY))
    rules = load_rule_set(signed, SIGNERS)
    assert (rules.version, rules.signed, rules.issued_at, rules.age_s(AT + 60)) == (4, True, AT, 60)
    assert load_rule_set(signed, SIGNERS).digest == rules.digest  # read again: the same document


def test_load_rule_set_errors_name_the_file_and_the_problem(tmp_path) -> None:
    signed = tmp_path / "policy.cose"
    signed.write_bytes(build_rule_set(SIGNER, BUILTIN.read_text(), version=4, issued_at=AT, expires_at=AT + DAY))
    bad = tmp_path / "bad.json"
    broken = json.loads(BUILTIN.read_text())
    broken["rules"][3]["Logic"] = {"all": []}
    bad.write_text(json.dumps(broken))
    for path, signers, message in [
        (tmp_path / "absent.json", None, "absent.json: cannot read the rule set"),
        (signed, None, "policy.cose: a signed rule set, and no list keys were given"),
        (signed, SignerKeys([SignerKey.from_spki(spki(STRANGER), "t")]),
         "policy.cose: not a usable rule set: unknown_signer"),
        (bad, None, 'bad.json: not a usable rule set: malformed: rules[3] VR-VN-0003: Logic is not valid CertLogic'),
    ]:
        with pytest.raises(RuleSetError) as error:
            load_rule_set(path, signers)
        assert message in str(error.value)
