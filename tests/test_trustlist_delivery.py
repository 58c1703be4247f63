"""The issuer's commands (``trust-list``, ``revocation``, ``publish``) and both delivery paths into a gate:
retained messages on a real Mosquitto, and a drop directory. Both end in the same ``TrustUpdates.offer``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_helpers import Subscriber, make_pki, retained, wait_until
from qrgate.passes.signed_list import ListOutcome, ListType, SignerKeys
from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import Reason
from qrgate.passes.verifier import PassVerifier
from qrgate.trust_updates import REFUSED_SUFFIX, TrustUpdates
from qrgate.wire import REVOCATION_TOPIC, TRUST_LIST_TOPIC
from qrgate_provisioning.cli import build_parser
from qrgate_provisioning.dcc_test_issuer import fake_vaccination_payload
from qrgate_provisioning.keys import load_issuer_key, new_dcc_issuer_key, new_issuer_key, write_issuer_files
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass
from qrgate_provisioning.trustlist import load_list_signer, pass_hashes
from qrgate_tools.broker import BrokerTls, MosquittoBroker

DAY = 86_400
NOW = int(time.time())  # the commands sign with the real clock; passes are minted around it


def issuer_cli(*argv: str | Path) -> int:
    """Run one ``qrgate-issuer`` command line the way its main() does: parse, then ``args.run(args)``."""
    args = build_parser().parse_args([str(a) for a in argv])
    return args.run(args)


@pytest.fixture
def province(tmp_path: Path) -> dict[str, Path]:
    """An issuer directory (a qrgate issuer's JSON key file and a DCC signing certificate) and a list key."""
    issuers = tmp_path / "issuers"
    hanoi = write_issuer_files(new_issuer_key("VN-HN", "EdDSA"), issuers, formats=["qrgate"])
    dsc = write_issuer_files(new_dcc_issuer_key("VN", "ES256", not_before=dt.datetime.fromtimestamp(NOW - DAY, dt.UTC),
                                                not_after=dt.datetime.fromtimestamp(NOW + 365 * DAY, dt.UTC)), issuers)
    assert issuer_cli("trust-list", "new-signer", "--alg", "ES256", "--out-dir", tmp_path / "list-key") == 0
    (private,) = (tmp_path / "list-key").glob("*.key")
    (public,) = (tmp_path / "list-key").glob("*.pem")
    pins = tmp_path / "pins"
    pins.mkdir()
    (pins / public.name).write_bytes(public.read_bytes())
    return {"issuers": issuers, "list_key": private, "list_pub": public, "pins": pins,
            "hanoi_key": hanoi["private_key"], "dsc_key": dsc["private_key"], "dsc_cert": dsc["certificate"]}


def gate(tmp_path: Path, pins: Path) -> TrustUpdates:
    return TrustUpdates(tmp_path / "gate-state", provisioned_signers=SignerKeys.from_pem_dir(pins),
                        static_store=TrustStore())


def passes(province: dict[str, Path]) -> dict[str, str]:
    from cryptography import x509

    hanoi = load_issuer_key(province["hanoi_key"].read_bytes(), "VN-HN")
    certificate = x509.load_pem_x509_certificate(province["dsc_cert"].read_bytes())
    dsc = load_issuer_key(province["dsc_key"].read_bytes(), "VN", certificate)
    return {
        "qrgate": mint_qrgate_pass(hanoi, "VN-HN", b"\x42" * 16, "subj-cli", NOW - 60, NOW + DAY),
        "dcc": mint_dcc_pass(dsc, certificate, fake_vaccination_payload("URN:UVCI:01:VN:CLI0001"), NOW - 60, NOW + DAY),
    }


# --- the commands --------------------------------------------------------------------------------------------------


def test_a_trust_list_built_from_the_issuer_files_lets_the_gate_verify_their_passes(tmp_path, province, capsys) -> None:
    out = tmp_path / "list.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "1", "--valid-hours", "48", "--out", out) == 0
    # Three entries: the Hanoi key, and the DSC both as its certificate and as its JSON trust file.
    assert "trust list v1: 3 keys, 1 list key(s)" in capsys.readouterr().out
    updates = gate(tmp_path, province["pins"])
    verifier = PassVerifier(updates.authority)
    assert {verifier.verify(t, NOW).reason for t in passes(province).values()} == {Reason.UNKNOWN_ISSUER}

    acceptance = updates.offer(out.read_bytes(), "file", NOW)

    # the command signs with the real clock, which has moved on since NOW was taken at import
    assert acceptance.accepted and updates.issued_at is not None and abs(updates.issued_at - time.time()) < 60
    assert updates.authority.state.list_expires_at == updates.issued_at + 48 * 3600
    assert all(verifier.verify(t, NOW).accepted for t in passes(province).values())


def test_trust_list_commands_fail_with_a_message(tmp_path, province, capsys) -> None:
    assert issuer_cli("trust-list", "build", "--signer", tmp_path / "absent.pem", "--keys", province["issuers"],
                      "--version", "1", "--out", tmp_path / "x") == 1
    assert "absent.pem" in capsys.readouterr().err
    # An RSA key cannot sign lists.
    paths = write_issuer_files(new_dcc_issuer_key("VN", "PS256", not_before=dt.datetime(2025, 1, 1),
                                                  not_after=dt.datetime(2027, 1, 1)), tmp_path / "rsa")
    assert issuer_cli("trust-list", "build", "--signer", paths["private_key"], "--keys", province["issuers"],
                      "--version", "1", "--out", tmp_path / "x") == 1
    assert "ES256 or EdDSA" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rotation_through_the_commands(tmp_path, province) -> None:
    assert issuer_cli("trust-list", "new-signer", "--out-dir", tmp_path / "next") == 0
    (next_key,) = (tmp_path / "next").glob("*.key")
    (next_pub,) = (tmp_path / "next").glob("*.pem")
    first, second = tmp_path / "v1.cose", tmp_path / "v2.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "1", "--next-signer", next_pub, "--out", first) == 0
    assert issuer_cli("trust-list", "build", "--signer", next_key, "--keys", province["issuers"], "--version", "2",
                      "--out", second) == 0
    updates = gate(tmp_path, province["pins"])
    # the gate does not know it yet
    assert updates.offer(second.read_bytes(), "file", NOW).outcome is ListOutcome.UNKNOWN_SIGNER
    assert updates.offer(first.read_bytes(), "file", NOW).accepted
    assert updates.offer(second.read_bytes(), "file", NOW).accepted
    assert [str(k.kid.hex()) for k in updates.pinned_signers] == [load_list_signer(next_key).kid.hex()]


def test_revocation_snapshot_and_delta_from_files(tmp_path, province, capsys) -> None:
    texts = passes(province)
    trust = tmp_path / "list.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "1", "--out", trust) == 0
    ucis = tmp_path / "ucis.txt"
    ucis.write_text("# revoked by the ministry\nURN:UVCI:01:VN:CLI0001\n\nURN:UVCI:01:VN:OTHER\n")
    hashed = tmp_path / "hashes.txt"
    hashed.write_text(f"signature {'ab' * 16}\n")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{'42' * 16}\n")
    snapshot, delta = tmp_path / "r1.cose", tmp_path / "r2.cose"
    assert issuer_cli("revocation", "build", "--snapshot", "--version", "1", "--signer", province["list_key"],
                      "--uci-file", ucis, "--hash-file", hashed, "--out", snapshot) == 0
    assert "2 uci" in capsys.readouterr().out
    assert issuer_cli("revocation", "build", "--delta", "--base", "1", "--version", "2",
                      "--signer", province["list_key"],
                      "--pass-id-file", ids, "--remove-uci-file", ucis, "--out", delta) == 0

    updates = gate(tmp_path, province["pins"])
    verifier = PassVerifier(updates.authority)
    assert updates.offer(trust.read_bytes(), "file", NOW).accepted
    assert updates.offer(snapshot.read_bytes(), "file", NOW).accepted
    assert verifier.verify(texts["dcc"], NOW).reason is Reason.REVOKED
    assert verifier.verify(texts["qrgate"], NOW).accepted
    assert updates.offer(delta.read_bytes(), "file", NOW).accepted
    assert verifier.verify(texts["dcc"], NOW).accepted
    assert verifier.verify(texts["qrgate"], NOW).reason is Reason.REVOKED


def test_revoking_whole_pass_texts(tmp_path, province) -> None:
    texts = passes(province)
    pass_file = tmp_path / "passes.txt"
    pass_file.write_text(texts["qrgate"] + "\n")
    trust, revocation = tmp_path / "t.cose", tmp_path / "r.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "1", "--out", trust) == 0
    assert issuer_cli("revocation", "build", "--snapshot", "--version", "1", "--signer", province["list_key"],
                      "--pass-file", pass_file, "--out", revocation) == 0
    updates = gate(tmp_path, province["pins"])
    assert (updates.offer(trust.read_bytes(), "file", NOW).accepted
            and updates.offer(revocation.read_bytes(), "file", NOW).accepted)
    index = updates.authority.state.revoked
    assert {t: index.count(t) for t in pass_hashes(texts["qrgate"])} == dict.fromkeys(pass_hashes(texts["qrgate"]), 1)
    verifier = PassVerifier(updates.authority)
    assert (verifier.verify(texts["qrgate"], NOW).reason is Reason.REVOKED
            and verifier.verify(texts["dcc"], NOW).accepted)


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--delta", "--version", "2"], 2, "--base goes with --delta"),
    (["--snapshot", "--base", "1", "--version", "2"], 2, "--base goes with --delta"),
    (["--snapshot", "--version", "2", "--remove-uci-file", "{ucis}"], 2, "only with --delta"),
    (["--snapshot", "--version", "2", "--pass-id-file", "{bad}"], 1, "bad.txt:2:"),
    (["--snapshot", "--version", "2", "--hash-file", "{bad}"], 1, "bad.txt:1:"),
    (["--delta", "--base", "3", "--version", "3"], 1, "must be newer than its base"),
])
def test_revocation_build_usage_and_input_errors(tmp_path, province, capsys, argv, code, message) -> None:
    (tmp_path / "ucis.txt").write_text("URN:UVCI:01:VN:X\n")
    (tmp_path / "bad.txt").write_text("00ff\nnot-hex\n")
    argv = [a.format(ucis=tmp_path / "ucis.txt", bad=tmp_path / "bad.txt") for a in argv]
    out = tmp_path / "r.cose"
    assert issuer_cli("revocation", "build", *argv, "--signer", province["list_key"], "--out", out) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.cose").exists()


# --- the drop directory ----------------------------------------------------------------------------------------------


def test_the_drop_directory_takes_lists_in_any_order_and_sets_refused_ones_aside(tmp_path, province) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    assert issuer_cli("trust-list", "new-signer", "--out-dir", tmp_path / "next") == 0
    (next_key,) = (tmp_path / "next").glob("*.key")
    (next_pub,) = (tmp_path / "next").glob("*.pem")
    trust, revocation = tmp_path / "t.cose", tmp_path / "r.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "4", "--next-signer", next_pub, "--out", trust) == 0
    # Signed by the key the trust list introduces: it only verifies once the trust list is in.
    assert issuer_cli("revocation", "build", "--snapshot", "--version", "1", "--signer", next_key,
                      "--out", revocation) == 0
    assert issuer_cli("publish", revocation, "--to-dir", drop) == 0
    assert issuer_cli("publish", trust, "--to-dir", drop) == 0
    assert sorted(p.name for p in drop.iterdir()) == ["qrgate-revocation-v0000000001.cose",
                                                       "qrgate-trust-list-v0000000004.cose"]
    (drop / "notes.txt").write_text("not a list")
    (drop / ".partial.tmp").write_bytes(b"being written")

    updates = gate(tmp_path, province["pins"])
    results = {path.name: acceptance.outcome for path, acceptance in updates.import_directory(drop, NOW)}

    assert results == {"qrgate-revocation-v0000000001.cose": ListOutcome.ACCEPTED,
                       "qrgate-trust-list-v0000000004.cose": ListOutcome.ACCEPTED,
                       "notes.txt": ListOutcome.MALFORMED}
    assert (updates.version, updates.revocation_version) == (4, 1)
    assert sorted(p.name for p in drop.iterdir()) == [".partial.tmp", "notes.txt" + REFUSED_SUFFIX]
    assert updates.import_directory(drop, NOW) == []  # refused files are not offered again


# --- MQTT -------------------------------------------------------------------------------------------------------------


def raw_publish(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="garbage-writer", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_lists_published_retained_reach_a_gate_that_connects_later(tmp_path, province, broker, capsys) -> None:
    trust, snapshot, delta = tmp_path / "t.cose", tmp_path / "r1.cose", tmp_path / "r2.cose"
    ucis = tmp_path / "ucis.txt"
    ucis.write_text("URN:UVCI:01:VN:CLI0001\n")
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "1", "--out", trust) == 0
    assert issuer_cli("revocation", "build", "--snapshot", "--version", "1", "--signer", province["list_key"],
                      "--out", snapshot) == 0
    assert issuer_cli("revocation", "build", "--delta", "--base", "1", "--version", "2",
                      "--signer", province["list_key"], "--uci-file", ucis, "--out", delta) == 0
    port = str(broker.port)
    for document in (trust, snapshot, delta):
        assert issuer_cli("publish", document, "--mqtt-host", broker.host, "--mqtt-port", port) == 0
    assert f"published on {REVOCATION_TOPIC} (not retained, QoS 1)" in capsys.readouterr().out

    # The gate connects afterwards: the retained trust list and snapshot arrive; the delta was not retained.
    updates = gate(tmp_path, province["pins"])
    for topic, expect in ((TRUST_LIST_TOPIC, ListType.TRUST_LIST), (REVOCATION_TOPIC, ListType.REVOCATION)):
        message = retained(broker.host, broker.port, topic)
        assert message.retain
        assert updates.offer(message.payload, f"mqtt:{topic}", NOW, expect=expect).accepted
    assert (updates.version, updates.revocation_version) == (1, 1)
    verifier = PassVerifier(updates.authority)
    assert verifier.verify(passes(province)["dcc"], NOW).accepted

    # A gate that is connected when the delta is published gets it.
    with Subscriber(broker.host, broker.port, [REVOCATION_TOPIC], client_id="gate-live") as live:
        wait_until(lambda: live.on(REVOCATION_TOPIC), 5, "the retained snapshot")
        assert issuer_cli("publish", delta, "--mqtt-host", broker.host, "--mqtt-port", port) == 0
        wait_until(lambda: len(live.on(REVOCATION_TOPIC)) == 2, 5, "the delta")
        outcomes = [updates.offer(m.payload, "mqtt", NOW, expect=ListType.REVOCATION).outcome
                    for m in live.on(REVOCATION_TOPIC)]
    assert outcomes == [ListOutcome.UNCHANGED, ListOutcome.ACCEPTED]
    assert verifier.verify(passes(province)["dcc"], NOW).reason is Reason.REVOKED

    # Garbage retained on the province topic is refused; the lists in force stay.
    raw_publish(broker, TRUST_LIST_TOPIC, b"\x00garbage on the retained topic")
    garbage = retained(broker.host, broker.port, TRUST_LIST_TOPIC)
    assert garbage.payload.startswith(b"\x00garbage")
    assert updates.offer(garbage.payload, "mqtt", NOW, expect=ListType.TRUST_LIST).outcome is ListOutcome.MALFORMED
    assert updates.version == 1 and verifier.verify(passes(province)["qrgate"], NOW).accepted


def test_publish_over_tls_with_a_client_certificate(tmp_path, province) -> None:
    pki = make_pki(tmp_path / "pki", client_cn="province-issuer")
    trust = tmp_path / "t.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "7", "--out", trust) == 0
    tls = BrokerTls(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    with MosquittoBroker(tmp_path / "broker", tls=tls) as broker:
        assert issuer_cli("publish", trust, "--mqtt-host", broker.host, "--mqtt-port", broker.port, "--tls",
                          "--ca-file", pki.ca_cert, "--cert-file", pki.client_cert, "--key-file", pki.client_key) == 0
        client_tls = dict(ca_certs=str(pki.ca_cert), certfile=str(pki.client_cert), keyfile=str(pki.client_key))
        with Subscriber(broker.host, broker.port, [TRUST_LIST_TOPIC], client_id="reader", **client_tls) as reader:
            wait_until(lambda: reader.on(TRUST_LIST_TOPIC), 5, "the retained list")
            assert reader.on(TRUST_LIST_TOPIC)[0].payload == trust.read_bytes()


def test_publish_fails_cleanly_without_a_broker_or_with_garbage(tmp_path, province, capsys) -> None:
    from qrgate_tools.broker import free_loopback_port

    trust = tmp_path / "t.cose"
    assert issuer_cli("trust-list", "build", "--signer", province["list_key"], "--keys", province["issuers"],
                      "--version", "1", "--out", trust) == 0
    assert issuer_cli("publish", trust, "--mqtt-host", "127.0.0.1", "--mqtt-port", free_loopback_port(),
                      "--timeout", "2") == 1
    assert "qrgate-issuer:" in capsys.readouterr().err
    garbage = tmp_path / "garbage.cose"
    garbage.write_bytes(b"\x01\x02\x03")
    assert issuer_cli("publish", garbage, "--to-dir", tmp_path) == 1
    assert "not a signed qrgate list" in capsys.readouterr().err
