"""Signed rule sets reach a gate like trust lists: through ``TrustUpdates.offer``, the drop directory and a real
Mosquitto (retained on ``qrgate/v1/province/rules``, taken by the daemon's own uplink subscriptions); a forged,
rolled back, expired, mistyped or invalid one is refused with the one in force kept; a restart keeps it; the
issuer's ``rules build`` and ``rules publish`` make and deliver them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from mqtt_helpers import retained, wait_until
from qrgate import wire
from qrgate.config import GateConfig, RulesConfig
from qrgate.errors import ConfigError
from qrgate.passes.signed_list import ListOutcome, ListType, SignerKeys
from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import Reason
from qrgate.policies import baseline_rules
from qrgate.rules.policy import RuleSet, builtin_rule_set
from qrgate.service import GateService
from qrgate.trust_updates import REFUSED_SUFFIX, RULE_SET_FILE, RULE_SET_LAST_GOOD, TrustUpdates
from qrgate_provisioning.keys import IssuerKey, private_key_pem
from qrgate_provisioning.mint import sign1
from qrgate_provisioning.trustlist import build_rule_set, build_trust_list, new_list_signer, public_pem, spki
from test_trustlist_delivery import issuer_cli, raw_publish

DAY, HOUR = 86_400, 3_600
NOW = int(time.time())  # the commands sign with the real clock
BUILTIN = Path(__file__).resolve().parents[1] / "edge" / "qrgate" / "data" / "rules-vn-2021.json"
LIST_KEY, STRANGER = new_list_signer("EdDSA"), new_list_signer("ES256")


def province_content(pcr_hours: int = 48) -> str:
    """The built-in set with the province's one change: the PCR window (TR-VN-0004), as docs/rules.md shows it."""
    content = json.loads(BUILTIN.read_text())
    (pcr,) = [rule for rule in content["rules"] if rule["Identifier"] == "TR-VN-0004"]
    pcr["Logic"]["if"][1]["before"][1]["plusTime"][1] = pcr_hours
    pcr["Version"] = "1.1.0"
    return json.dumps(content, indent=2)


def rule_set(version: int, *, signer: IssuerKey = LIST_KEY, issued_at: int = NOW, valid_s: int = 30 * DAY,
             content: str | None = None) -> bytes:
    return build_rule_set(signer, province_content() if content is None else content, version=version,
                          issued_at=issued_at, expires_at=issued_at + valid_s)


def signed_payload(payload: dict[str, Any], signer: IssuerKey = LIST_KEY) -> bytes:
    """A document the issuer's builder would refuse to make, signed all the same."""
    return sign1(signer, cbor2.dumps(payload), kid=hashlib.sha256(spki(signer)).digest()[:8])


def pins(tmp_path: Path) -> Path:
    directory = tmp_path / "pins"
    directory.mkdir(exist_ok=True)
    (directory / "list.pem").write_bytes(public_pem(LIST_KEY))
    return directory


def gate(tmp_path: Path) -> TrustUpdates:
    """A gate's signed lists as the daemon opens them, the built-in rules as its baseline; same state every call."""
    return TrustUpdates(tmp_path / "state", provisioned_signers=SignerKeys.from_pem_dir(pins(tmp_path)),
                        static_store=TrustStore(), baseline_rules=builtin_rule_set())


def pcr(hours_ago: float, at: float = NOW) -> dict[str, Any]:
    sample = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at - hours_ago * HOUR))
    return {"ver": "1.3.0", "t": [{"tg": "840539006", "tt": "LP6464-4", "sc": sample, "tr": "260415000",
                                   "co": "VN", "is": "MoH", "ci": "URN:UVCI:01:VN:T"}]}


def reason(rules: RuleSet | None, payload: dict[str, Any], at: float = NOW) -> Reason:
    assert rules is not None
    return rules.judge(payload, at=at, iat=int(at) - HOUR, exp=int(at) + DAY, country="VN").reason


# --- TrustUpdates.offer ----------------------------------------------------------------------------------------------


def test_a_signed_rule_set_replaces_the_builtin_one_and_a_restart_keeps_it(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.rules is builtin_rule_set() and reason(updates.rules, pcr(60)) is Reason.ACCEPTED
    assert updates.report(NOW, DAY)["rule_set_version"] == 0
    document = rule_set(1)

    acceptance = updates.offer(document, "file", NOW)

    assert ((acceptance.outcome, acceptance.list_type, acceptance.version)
            == (ListOutcome.ACCEPTED, ListType.RULE_SET, 1))
    assert acceptance.detail == "13 rules of VN"
    assert updates.rules.signed and reason(updates.rules, pcr(60)) is Reason.TEST_TOO_OLD  # 48 h now, not 72
    assert updates.authority.state.rules is updates.rules
    report = updates.report(NOW + 120, DAY)
    assert (report["rule_set_version"], report["rule_set_age_s"]) == (1, 120)
    assert rule_set_document(tmp_path) == document  # kept exactly as received

    restarted = gate(tmp_path)
    assert restarted.rules.version == 1 and restarted.rules.digest == updates.rules.digest
    assert reason(restarted.rules, pcr(60)) is Reason.TEST_TOO_OLD


def rule_set_document(tmp_path: Path) -> bytes:
    return (tmp_path / "state" / RULE_SET_FILE).read_bytes()


def test_the_same_document_again_is_unchanged_and_a_newer_one_keeps_the_last_good(tmp_path) -> None:
    updates = gate(tmp_path)
    first = rule_set(1)
    assert updates.offer(first, "mqtt", NOW, expect=ListType.RULE_SET).accepted
    assert updates.offer(first, "mqtt", NOW, expect=ListType.RULE_SET).outcome is ListOutcome.UNCHANGED
    second = rule_set(2, content=province_content(24))
    assert updates.offer(second, "mqtt", NOW, expect=ListType.RULE_SET).accepted
    state = tmp_path / "state"
    assert (state / RULE_SET_FILE).read_bytes() == second and (state / RULE_SET_LAST_GOOD).read_bytes() == first
    assert reason(updates.rules, pcr(30)) is Reason.TEST_TOO_OLD


def invalid_logic_document(version: int = 3) -> bytes:
    content = json.loads(BUILTIN.read_text())
    content["rules"][3]["Logic"] = {"all": [None]}  # from the CertLogic validation suite: "unrecognised operator"
    return signed_payload({"type": "qrgate-rule-set", "version": version, "issued_at": NOW, "expires_at": NOW + DAY,
                           "content": json.dumps(content)})


def tampered(document: bytes) -> bytes:
    return document[:-1] + bytes([document[-1] ^ 1])  # the last byte is the signature's


REFUSALS = {
    "forged": (lambda: rule_set(3, signer=STRANGER), None, ListOutcome.UNKNOWN_SIGNER, "is not a pinned list key"),
    "bad_signature": (lambda: tampered(rule_set(3)), None, ListOutcome.BAD_SIGNATURE, "kid"),
    "rolled_back": (lambda: rule_set(1, content=province_content(12)), None, ListOutcome.ROLLBACK, "v2 is in force"),
    "same_version": (lambda: rule_set(2, content=province_content(12)), None, ListOutcome.ROLLBACK, "v2 is in force"),
    "expired": (lambda: rule_set(3, issued_at=NOW - 10 * DAY, valid_s=9 * DAY), None, ListOutcome.EXPIRED,
                "expired at"),
    "invalid_certlogic": (invalid_logic_document, None, ListOutcome.MALFORMED,
                          "rules[3] VR-VN-0003: Logic is not valid CertLogic"),
    "unknown_field": (lambda: signed_payload({"type": "qrgate-rule-set", "version": 3, "issued_at": NOW,
                                              "expires_at": NOW + DAY, "content": BUILTIN.read_text(), "region": "HN"}),
                      None, ListOutcome.MALFORMED, "unknown field(s) region"),
    "rules_as_bytes": (lambda: signed_payload({"type": "qrgate-rule-set", "version": 3, "issued_at": NOW,
                                               "expires_at": NOW + DAY, "content": BUILTIN.read_bytes()}),
                       None, ListOutcome.MALFORMED, "content must be text"),
    "a_trust_list_on_the_rules_topic": (lambda: build_trust_list(LIST_KEY, [], version=9, issued_at=NOW,
                                                                 expires_at=NOW + DAY),
                                        ListType.RULE_SET, ListOutcome.WRONG_TYPE,
                                        "where a qrgate-rule-set was expected"),
    "a_rule_set_on_the_trust_list_topic": (lambda: rule_set(3), ListType.TRUST_LIST, ListOutcome.WRONG_TYPE,
                                           "a qrgate-rule-set where a qrgate-trust-list was expected"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_rule_set_keeps_the_one_in_force(tmp_path, case) -> None:
    make, expect, outcome, detail = REFUSALS[case]
    updates = gate(tmp_path)
    assert updates.offer(rule_set(2), "file", NOW).accepted
    in_force, saved = updates.rules, rule_set_document(tmp_path)

    acceptance = updates.offer(make(), f"test:{case}", NOW, expect=expect)

    assert acceptance.outcome is outcome and detail in (acceptance.detail or ""), acceptance
    assert updates.rules is in_force and updates.rules.version == 2
    assert reason(updates.rules, pcr(60)) is Reason.TEST_TOO_OLD
    assert rule_set_document(tmp_path) == saved and not (tmp_path / "state" / RULE_SET_LAST_GOOD).exists()
    assert gate(tmp_path).rules.version == 2  # and after a restart


def test_a_refused_first_rule_set_keeps_the_builtin_one(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(invalid_logic_document(), "file", NOW).outcome is ListOutcome.MALFORMED
    assert updates.rules is builtin_rule_set() and not (tmp_path / "state" / RULE_SET_FILE).exists()


def test_a_damaged_rule_set_file_falls_back_to_the_last_good_one_then_to_the_baseline(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(rule_set(1), "file", NOW).accepted and updates.offer(rule_set(2), "file", NOW).accepted
    state = tmp_path / "state"
    (state / RULE_SET_FILE).write_bytes(tampered((state / RULE_SET_FILE).read_bytes()))
    assert gate(tmp_path).rules.version == 1
    assert (state / (RULE_SET_FILE + ".damaged")).exists()
    (state / RULE_SET_LAST_GOOD).write_bytes(b"\xd2 truncated")
    assert gate(tmp_path).rules is builtin_rule_set()


def test_a_rule_set_signed_before_a_key_rotation_still_loads_at_start_up(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(rule_set(1), "file", NOW).accepted
    successor = new_list_signer("EdDSA")
    rotate = build_trust_list(LIST_KEY, [], version=1, issued_at=NOW, expires_at=NOW + DAY,
                              next_signers=[spki(successor)])
    retire = build_trust_list(successor, [], version=2, issued_at=NOW, expires_at=NOW + DAY)
    assert updates.offer(rotate, "file", NOW).accepted and updates.offer(retire, "file", NOW).accepted
    assert updates.offer(rule_set(2), "file", NOW).outcome is ListOutcome.UNKNOWN_SIGNER  # the old key: no more
    assert gate(tmp_path).rules.version == 1  # but what it signed while pinned stays in force
    assert updates.offer(rule_set(2, signer=successor), "file", NOW).accepted


# --- the issuer's commands and the drop directory --------------------------------------------------------------------


@pytest.fixture
def list_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "list.key"
    path.write_bytes(private_key_pem(LIST_KEY))
    return path


def test_rules_build_signs_the_builtin_set_by_default_and_a_gate_accepts_it(tmp_path, list_key_file, capsys) -> None:
    out = tmp_path / "rules.cose"
    assert issuer_cli("rules", "build", "--version", "3", "--valid-days", "10", "--signer", list_key_file,
                      "--out", out) == 0
    assert "rule set v3 from " in capsys.readouterr().out
    updates = gate(tmp_path)
    assert updates.offer(out.read_bytes(), "file", time.time(), expect=ListType.RULE_SET).accepted
    assert updates.rules.version == 3 and updates.rules.expires_at == updates.rules.issued_at + 10 * DAY
    assert [rule.label for rule in updates.rules.rules] == [rule.label for rule in builtin_rule_set().rules]


def test_rules_build_refuses_a_source_a_gate_would_refuse(tmp_path, list_key_file, capsys) -> None:
    source = tmp_path / "policy.json"
    content = json.loads(province_content())
    content["rules"][5]["Logic"] = {"var": 0}  # invalid: a var path must be a string
    source.write_text(json.dumps(content))
    out = tmp_path / "rules.cose"
    assert issuer_cli("rules", "build", "--source", source, "--version", "3", "--signer", list_key_file,
                      "--out", out) == 1
    error = capsys.readouterr().err
    assert "a gate would refuse this list: malformed: rules[5] TR-VN-0001: Logic is not valid CertLogic" in error
    assert not out.exists()
    assert issuer_cli("rules", "build", "--source", tmp_path / "absent.json", "--version", "3",
                      "--signer", list_key_file, "--out", out) == 1
    assert "absent.json" in capsys.readouterr().err


def test_rules_publish_to_a_drop_directory_and_the_gate_imports_it(tmp_path, list_key_file, capsys) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good, forged = tmp_path / "good.cose", tmp_path / "forged.cose"
    assert issuer_cli("rules", "build", "--source", BUILTIN, "--version", "5", "--signer", list_key_file,
                      "--out", good) == 0
    forged.write_bytes(rule_set(6, signer=STRANGER))
    assert issuer_cli("rules", "publish", good, "--to-dir", drop) == 0
    assert issuer_cli("publish", forged, "--to-dir", drop) == 0  # the general publish routes rule sets too
    trust = tmp_path / "trust.cose"
    trust.write_bytes(build_trust_list(LIST_KEY, [], version=1, issued_at=NOW, expires_at=NOW + DAY))
    assert issuer_cli("rules", "publish", trust, "--to-dir", drop) == 1
    assert "a qrgate-trust-list, not a qrgate-rule-set" in capsys.readouterr().err

    updates = gate(tmp_path)
    results = {path.name: acceptance.outcome for path, acceptance in updates.import_directory(drop, time.time())}

    assert results == {"qrgate-rule-set-v0000000005.cose": ListOutcome.ACCEPTED,
                       "qrgate-rule-set-v0000000006.cose": ListOutcome.UNKNOWN_SIGNER}
    assert updates.rules.version == 5
    assert sorted(p.name for p in drop.iterdir()) == ["qrgate-rule-set-v0000000006.cose" + REFUSED_SUFFIX]


# --- over MQTT, into the daemon --------------------------------------------------------------------------------------


def daemon_config(tmp_path: Path, port: int) -> GateConfig:
    return GateConfig.model_validate({
        "device": {"id": "gate-rules-01", "site_id": "market-1"},
        "trust": {"paths": [], "signers_dir": str(pins(tmp_path)), "state_dir": str(tmp_path / "state"),
                  "drop_dir": None},
        "feedback": {"mock_pins": True},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port, "tls": False, "ca_file": None, "cert_file": None,
                 "key_file": None, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5},
    })


def test_a_rule_set_published_retained_reaches_the_daemon_and_garbage_on_the_topic_is_refused(
        tmp_path, broker, list_key_file, capsys, caplog) -> None:
    document = tmp_path / "rules.cose"
    assert issuer_cli("rules", "build", "--source", BUILTIN, "--version", "7", "--signer", list_key_file,
                      "--out", document) == 0
    assert issuer_cli("rules", "publish", document, "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)) == 0
    assert f"published on {wire.RULE_SET_TOPIC} (retained, QoS 1)" in capsys.readouterr().out
    assert retained(broker.host, broker.port, wire.RULE_SET_TOPIC).payload == document.read_bytes()

    service = GateService(daemon_config(tmp_path, broker.port))
    try:
        assert service.trust_updates is not None and service.trust_updates.rules is builtin_rule_set()
        assert service.uplink is not None
        service.uplink.start()
        wait_until(lambda: service.trust_updates.rules.version == 7, 10, "the retained rule set")
        in_force = service.trust_updates.rules
        assert "| rules v7" in service.status_line()

        caplog.set_level(logging.WARNING, logger="qrgate.trust_updates")

        def refusal_logged(outcome: str) -> Callable[[], bool]:
            return lambda: any(f"refused: {outcome}" in r.getMessage() for r in caplog.records)

        for document_bytes, outcome in ((invalid_logic_document(9), "malformed"),
                                        (rule_set(8, signer=STRANGER), "unknown_signer"),
                                        (rule_set(6), "rollback")):
            raw_publish(broker, wire.RULE_SET_TOPIC, document_bytes)
            wait_until(refusal_logged(outcome), 10, f"the gate to refuse a {outcome} rule set")
        assert service.trust_updates.rules is in_force
        service.uplink.stop(flush_timeout_s=1.0)
    finally:
        service.close()

    status = wire.DeviceStatus.from_json(retained(broker.host, broker.port, wire.status_topic("gate-rules-01")).payload)
    assert status.state == "offline" and status.rule_set_version == 7 and status.rule_set_age_s is not None
    restarted = GateService(daemon_config(tmp_path, broker.port))
    try:
        assert restarted.trust_updates is not None and restarted.trust_updates.rules.version == 7  # a restart keeps it
    finally:
        restarted.close()


def test_the_configured_baseline_builtin_none_or_a_file(tmp_path) -> None:
    assert RulesConfig().baseline == "builtin" and baseline_rules(RulesConfig()) is builtin_rule_set()
    assert baseline_rules(RulesConfig(baseline="none")) is None
    policy = tmp_path / "policy.json"
    policy.write_text(province_content(24))
    assert reason(baseline_rules(RulesConfig(baseline=str(policy))), pcr(30)) is Reason.TEST_TOO_OLD
    with pytest.raises(ConfigError, match=r"rules.baseline: .*absent.json: cannot read the rule set"):
        baseline_rules(RulesConfig(baseline=str(tmp_path / "absent.json")))
    # A gate without list keys (no signed lists) applies its baseline too.
    config = daemon_config(tmp_path, 1883).model_copy(update={"mqtt": daemon_config(tmp_path, 1883).mqtt.model_copy(
        update={"enabled": False})})
    config = config.model_copy(update={"trust": config.trust.model_copy(update={"signers_dir": None})})
    service = GateService(config)
    try:
        assert service.trust_updates is None and service.authority.state.rules is builtin_rule_set()
        assert service.status_line().endswith("| rules built-in")
    finally:
        service.close()
