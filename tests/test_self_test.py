"""``qrgate self-test``: every check against real parts (gpiozero's MockFactory, the synthetic camera, a
real Mosquitto, real SQLite files, signed trust lists), each failing for a named reason, and the CLI.

The host clock of a test machine may or may not be synchronised (a container's usually is not), so the
tests hand the clock check a SystemClock whose one source is systemd-timesyncd's flag file, in tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory, MockPin
from paho.mqtt.enums import CallbackAPIVersion

from daemon_helpers import write_trust_anchors
from mqtt_helpers import make_pki, wait_until
from qrgate import selftest
from qrgate.cli import main
from qrgate.clock import SystemClock, TimesyncdSource
from qrgate.config import GateConfig
from qrgate.outbox import Outbox
from qrgate.passes.signed_list import ListOutcome, SignerKeys
from qrgate.passes.trust import TrustStore
from qrgate.selftest import CheckResult, run_self_test
from qrgate.trust_updates import TrustUpdates
from qrgate_provisioning.keys import IssuerKey
from qrgate_provisioning.trustlist import build_trust_list, key_entry, new_list_signer, public_pem
from qrgate_tools.broker import BrokerTls, MosquittoBroker, free_loopback_port

ROOT = Path(__file__).resolve().parents[1]
GREEN, RED, BUZZER, RELAY = 17, 27, 22, 5  # rpi-gate-v1
DEVICE = "gate-selftest-01"
NAMES = ["led.green", "led.red", "buzzer", "relay", "camera", "clock", "disk", "outbox", "trust", "broker"]
RELAY_PULSE_S = 0.05
HOUR = 3600


def levels(pin: MockPin) -> list[bool]:
    return [bool(entry.state) for entry in pin.states]


@pytest.fixture
def gate_dir(tmp_path: Path) -> Path:
    """What an installed gate has on disk: trust anchors and an outbox the daemon created."""
    directory = tmp_path / "gate"
    directory.mkdir()
    write_trust_anchors(directory / "trust")
    Outbox(directory / "outbox.sqlite").close()
    return directory


def gate_config(gate_dir: Path, *, port: int = 1, **sections: dict[str, object]) -> GateConfig:
    """The gate's configuration with ``sections`` merged over it (one dict per table)."""
    data: dict[str, dict[str, object]] = {
        "device": {"id": DEVICE, "site_id": "site-test", "mode": "demo"},
        "camera": {"source": "synthetic"},
        "trust": {"paths": [str(gate_dir / "trust")], "state_dir": str(gate_dir / "trust-state")},
        "feedback": {"mock_pins": True, "patterns": {"relay_pulse_s": RELAY_PULSE_S}},
        "outbox": {"path": str(gate_dir / "outbox.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port, "tls": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return GateConfig.model_validate(data)


def synchronised_clock(tmp_path: Path, synchronised: bool = True) -> SystemClock:
    flag = tmp_path / "timesync-synchronized"
    if synchronised:
        flag.touch()
    return SystemClock(sources=[TimesyncdSource(flag)], refresh_s=0.0)


# --- the whole run -------------------------------------------------------------------------------------------------


def test_every_check_passes_on_a_healthy_gate_and_each_output_was_driven(
    tmp_path: Path, gate_dir: Path, broker: MosquittoBroker
) -> None:
    factory = MockFactory()
    results = run_self_test(gate_config(gate_dir, port=broker.port), pin_factory=factory,
                            clock=synchronised_clock(tmp_path))

    assert [result.name for result in results] == NAMES
    assert [result for result in results if not result.ok] == []
    # Every level change of every output, and nothing else: LEDs twice on and off, the buzzer once, the
    # active-low relay driven high (released) when claimed, then low for the pulse and high again.
    green, red, buzzer, relay = (factory.pin(bcm) for bcm in (GREEN, RED, BUZZER, RELAY))
    assert levels(green) == [False, True, False, True, False] and len(green.states) == 5
    assert levels(red) == [False, True, False, True, False] and len(red.states) == 5
    assert levels(buzzer) == [False, True, False] and len(buzzer.states) == 3
    assert levels(relay) == [False, True, False, True] and len(relay.states) == 4
    assert green.states[2].timestamp >= selftest.LED_ON_S - 0.001
    assert buzzer.states[2].timestamp >= selftest.BUZZER_ON_S - 0.001
    assert relay.states[3].timestamp >= RELAY_PULSE_S - 0.001  # energised for the configured pulse

    checks = {result.name: result for result in results}
    assert checks["led.green"].detail.startswith("GPIO17 (J8 pin 11)")
    assert "active low" in checks["relay"].detail
    assert "synthetic 640x480" in checks["camera"].detail and "brightness" in checks["camera"].detail
    assert checks["clock"].detail.startswith("synchronised (timesyncd)")
    assert "0 pending" in checks["outbox"].detail
    assert checks["trust"].detail.startswith("1 static trust anchor from")
    assert f"as {DEVICE}-selftest (plain MQTT)" in checks["broker"].detail
    wait_until(lambda: f"as {DEVICE}-selftest" in broker.log_tail(50), what="the broker to log the connection")


def test_the_broker_check_does_not_take_over_the_daemons_session(gate_dir: Path, broker: MosquittoBroker) -> None:
    """The daemon is connected as the device id; the self-test connects beside it, not in its place."""
    kicked: list[object] = []
    daemon = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5)
    daemon.on_disconnect = lambda *args: kicked.append(args[3])
    daemon.connect(broker.host, broker.port)
    daemon.loop_start()
    try:
        wait_until(daemon.is_connected, what="the daemon's stand-in to connect")
        result = selftest.check_broker(gate_config(gate_dir, port=broker.port).mqtt, device_id=DEVICE)
        assert result.ok, result.detail
        time.sleep(0.2)
        assert daemon.is_connected() and kicked == []
    finally:
        daemon.disconnect()
        daemon.loop_stop()


# --- feedback ------------------------------------------------------------------------------------------------------


def test_a_pin_held_by_another_process_fails_feedback_naming_it(gate_dir: Path) -> None:
    factory = MockFactory()
    with LED(GREEN, pin_factory=factory):  # the daemon's green LED
        results = selftest.check_feedback(gate_config(gate_dir).feedback, pin_factory=factory)
    assert len(results) == 1 and not results[0].ok and results[0].name == "feedback"
    assert "cannot claim GPIO17 (J8 pin 11) for the green" in results[0].detail
    assert levels(factory.pin(RED)) == [False]  # released again, never driven
    unknown = selftest.check_feedback(gate_config(gate_dir, feedback={"board": "no-such-board"}).feedback,
                                      pin_factory=factory)
    assert [(r.name, r.ok) for r in unknown] == [("feedback", False)] and "no such board profile" in unknown[0].detail


def test_without_a_relay_only_the_led_and_buzzer_pins_move(gate_dir: Path) -> None:
    factory = MockFactory()
    results = selftest.check_feedback(gate_config(gate_dir, feedback={"relay": False}).feedback, pin_factory=factory)
    assert [(r.name, r.ok) for r in results] == [("led.green", True), ("led.red", True), ("buzzer", True),
                                                 ("relay", True)]
    assert results[3].detail.startswith("not fitted")
    assert levels(factory.pin(RELAY)) == [False]


# --- camera --------------------------------------------------------------------------------------------------------


def test_a_files_camera_on_an_empty_directory_fails(gate_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-images"
    empty.mkdir()
    result = selftest.check_camera(gate_config(gate_dir, camera={"source": "files", "path": str(empty)}).camera)
    assert not result.ok and result.name == "camera"
    assert result.detail.startswith("files: no image files")


def test_a_black_frame_is_too_dark_and_a_white_one_too_bright(gate_dir: Path, tmp_path: Path) -> None:
    for level, verdict in ((5, "too dark"), (250, "too bright")):
        images = tmp_path / f"level-{level}"
        images.mkdir()
        cv2.imwrite(str(images / "frame.png"), np.full((480, 640), level, np.uint8))
        result = selftest.check_camera(gate_config(gate_dir, camera={"source": "files", "path": str(images)}).camera)
        assert not result.ok and result.detail.startswith(verdict), result.detail
        assert f"brightness {level}/255, focus 0" in result.detail and "the source ended" in result.detail


# --- clock, disk ---------------------------------------------------------------------------------------------------


def test_an_unsynchronised_clock_fails(gate_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selftest, "CLOCK_WAIT_S", 0.2)
    result = selftest.check_clock(gate_config(gate_dir).clock, clock=synchronised_clock(tmp_path, False))
    assert not result.ok and result.detail.startswith("not synchronised: no time source vouches for it")


def test_a_nearly_full_file_system_fails_the_disk_check(gate_dir: Path, small_filesystem: Path) -> None:
    result = selftest.check_disk(gate_config(gate_dir, outbox={"path": str(small_filesystem / "o.sqlite")}).outbox)
    assert not result.ok and result.detail.endswith(f"below {selftest.MIN_DISK_FREE_MB} MB")


@pytest.fixture
def read_only_outbox(tmp_path: Path) -> Iterator[Path]:
    """An outbox on a tmpfs that was then remounted read-only, as an SD card's ext4 does on errors (root only)."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=False,
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root)")
    try:
        Outbox(mount_point / "outbox.sqlite").close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True, capture_output=True)
        yield mount_point / "outbox.sqlite"
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_read_only_outbox_fails_both_disk_and_outbox(gate_dir: Path, read_only_outbox: Path) -> None:
    outbox = gate_config(gate_dir, outbox={"path": str(read_only_outbox)}).outbox
    disk, store = selftest.check_disk(outbox), selftest.check_outbox(outbox)
    assert not disk.ok and "mounted read-only" in disk.detail
    assert not store.ok and "read-only storage" in store.detail, store.detail


# --- outbox --------------------------------------------------------------------------------------------------------


def test_a_corrupt_outbox_fails_with_what_to_do(gate_dir: Path) -> None:
    garbage = gate_dir / "garbage.sqlite"
    garbage.write_bytes(os.urandom(8192))
    result = selftest.check_outbox(gate_config(gate_dir, outbox={"path": str(garbage)}).outbox)
    assert not result.ok and "the database is corrupt" in result.detail and "move the file aside" in result.detail


def test_a_missing_outbox_fails_and_is_not_created(gate_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "var" / "outbox.sqlite"
    result = selftest.check_outbox(gate_config(gate_dir, outbox={"path": str(missing)}).outbox)
    assert not result.ok and "does not exist" in result.detail
    assert not missing.parent.exists()


def test_the_outbox_check_reads_beside_an_open_writer_and_counts_pending(gate_dir: Path) -> None:
    from mqtt_helpers import append

    with Outbox(gate_dir / "outbox.sqlite") as daemon:  # the daemon's connection stays open throughout
        append(daemon, 3)
        result = selftest.check_outbox(gate_config(gate_dir).outbox)
        assert result.ok and "3 pending (oldest stored 0 s ago)" in result.detail, result.detail
        assert daemon.pending_count() == 3 and daemon.health().storage_error is None


# --- trust ---------------------------------------------------------------------------------------------------------


def pinned(tmp_path: Path, signer: IssuerKey) -> Path:
    """The province's list key pinned on the gate, as provisioning does (trust.signers_dir)."""
    pins = tmp_path / "pins"
    pins.mkdir()
    (pins / "list.pem").write_bytes(public_pem(signer))
    return pins


def test_signed_trust_list_missing_fails_and_nothing_is_created(gate_dir: Path, tmp_path: Path) -> None:
    trust = gate_config(gate_dir, trust={"signers_dir": str(pinned(tmp_path, new_list_signer("EdDSA")))}).trust
    result = selftest.check_trust(trust)
    assert not result.ok and "does not exist" in result.detail
    assert not Path(trust.state_dir).exists()
    Path(trust.state_dir).mkdir()  # a state directory without a list yet
    result = selftest.check_trust(trust)
    assert not result.ok and result.detail.startswith("no signed trust list in")
    assert "with 1 static anchor of trust.paths" in result.detail


def test_a_signed_trust_list_reports_version_and_age_and_fails_when_stale(gate_dir: Path, tmp_path: Path) -> None:
    signer = new_list_signer("EdDSA")
    pins = pinned(tmp_path, signer)
    trust = gate_config(gate_dir, trust={"signers_dir": str(pins), "max_age_h": 24.0}).trust
    issued = int(time.time()) - 2 * HOUR
    anchors = TrustStore.from_paths(trust.paths)
    document = build_trust_list(signer, [key_entry(key) for key in anchors], version=7, issued_at=issued,
                                expires_at=issued + 48 * HOUR)
    updates = TrustUpdates(trust.state_dir, provisioned_signers=SignerKeys.from_pem_dir(pins), static_store=anchors)
    assert updates.offer(document, "test", time.time()).outcome is ListOutcome.ACCEPTED

    fresh = selftest.check_trust(trust)
    assert fresh.ok and fresh.detail == "trust list v7, 1 key, issued 2.0 h ago", fresh.detail
    stale = selftest.check_trust(trust, now=issued + 30 * HOUR)
    assert not stale.ok and stale.detail.startswith("stale: older than trust.max_age_h = 24 h")
    expired = selftest.check_trust(trust, now=issued + 50 * HOUR)
    assert not expired.ok and expired.detail.startswith("stale: expired 2.0 h ago")


def test_static_anchors_missing_or_empty_fail(gate_dir: Path, tmp_path: Path) -> None:
    missing = selftest.check_trust(gate_config(gate_dir, trust={"paths": [str(tmp_path / "none")]}).trust)
    assert not missing.ok and "no such file or directory" in missing.detail
    (tmp_path / "empty").mkdir()
    empty = selftest.check_trust(gate_config(gate_dir, trust={"paths": [str(tmp_path / "empty")]}).trust)
    assert not empty.ok and empty.detail.startswith("no issuer key in trust.paths")


# --- broker --------------------------------------------------------------------------------------------------------


def test_a_broker_nobody_listens_for_fails_as_refused_and_a_skipped_one_does_not(gate_dir: Path) -> None:
    port = free_loopback_port()
    result = selftest.check_broker(gate_config(gate_dir, port=port).mqtt, device_id=DEVICE)
    assert not result.ok and result.detail.startswith(f"cannot connect to 127.0.0.1:{port}")
    assert "Connection refused" in result.detail
    skipped = selftest.check_broker(gate_config(gate_dir, port=port).mqtt, device_id=DEVICE, skip=True)
    assert skipped == CheckResult("broker", True, "skipped (--skip-broker)")
    disabled = gate_config(gate_dir, port=port, mqtt={"enabled": False}).mqtt
    assert selftest.check_broker(disabled, device_id=DEVICE).detail == "skipped (mqtt.enabled = false)"


def test_a_refused_connack_names_its_reason(gate_dir: Path, tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text("")  # nobody may connect: anonymous clients are refused
    with MosquittoBroker(tmp_path / "broker", password_file=passwords) as strict:
        result = selftest.check_broker(gate_config(gate_dir, port=strict.port).mqtt, device_id=DEVICE)
    assert not result.ok and result.detail == f"127.0.0.1:{strict.port} refused the connection: Not authorized"


def test_mutual_tls_as_the_uplink_builds_it_and_an_unknown_ca(gate_dir: Path, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", client_cn=DEVICE)
    tls = BrokerTls(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    with MosquittoBroker(tmp_path / "broker", tls=tls) as site:
        mqtt_tls = {"port": site.port, "tls": True, "ca_file": str(pki.ca_cert), "cert_file": str(pki.client_cert),
                    "key_file": str(pki.client_key)}
        result = selftest.check_broker(gate_config(gate_dir, port=site.port, mqtt=mqtt_tls).mqtt, device_id=DEVICE)
        assert result.ok and "(mutual TLS)" in result.detail, result.detail
        other = make_pki(tmp_path / "other-pki")
        wrong = selftest.check_broker(gate_config(gate_dir, port=site.port, mqtt={**mqtt_tls, "ca_file": str(
            other.ca_cert)}).mqtt, device_id=DEVICE)
        assert not wrong.ok and "certificate verify failed" in wrong.detail, wrong.detail
    missing = selftest.check_broker(gate_config(gate_dir, mqtt={**mqtt_tls, "ca_file": str(
        tmp_path / "no-ca.pem")}).mqtt, device_id=DEVICE)
    assert not missing.ok and missing.detail.startswith("TLS CA file") and "No such file" in missing.detail


# --- the command ---------------------------------------------------------------------------------------------------


def write_config(path: Path, gate_dir: Path, port: int, camera: str = 'source = "synthetic"') -> Path:
    path.write_text(f"""
device = {{ id = "{DEVICE}", site_id = "site-test", mode = "demo" }}
camera = {{ {camera} }}
trust = {{ paths = ["{gate_dir / 'trust'}"] }}
feedback = {{ mock_pins = true, patterns = {{ relay_pulse_s = {RELAY_PULSE_S} }} }}
outbox = {{ path = "{gate_dir / 'outbox.sqlite'}" }}
mqtt = {{ host = "127.0.0.1", port = {port}, tls = false }}
""")
    return path


@pytest.fixture
def clock_in_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's clock check, in this process, asks only a timesyncd flag that exists."""
    monkeypatch.setattr(selftest, "SystemClock", lambda **_: synchronised_clock(tmp_path))


@pytest.mark.usefixtures("clock_in_sync")
def test_the_command_prints_an_aligned_checklist_and_exits_0_when_all_pass(
    tmp_path: Path, gate_dir: Path, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["self-test", "--config", str(write_config(tmp_path / "gate.toml", gate_dir, broker.port))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == NAMES
    assert all(line.startswith("ok     ") for line in lines[:-1])
    assert len({line.index(line.split()[2]) for line in lines[:-1]}) == 1  # every detail starts in one column
    assert lines[-1] == f"all 10 checks ok on {DEVICE}"


@pytest.mark.usefixtures("clock_in_sync")
def test_the_command_exits_1_and_says_why_when_a_check_fails(
    tmp_path: Path, gate_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = write_config(tmp_path / "gate.toml", gate_dir, free_loopback_port(),
                          camera=f'source = "files", path = "{empty}"')
    assert main(["self-test", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.out.splitlines() if line.startswith("FAILED")]
    assert [line.split()[1] for line in failed] == ["camera", "broker"]
    assert captured.out.splitlines()[-1] == f"8 of 10 checks ok on {DEVICE}"
    assert "stop it first (sudo systemctl stop qrgate)" in captured.err
    assert main(["self-test", "--config", str(config), "--skip-broker", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == DEVICE and report["ok"] is False
    assert [check["name"] for check in report["checks"]] == NAMES
    assert all(set(check) == {"name", "ok", "detail"} for check in report["checks"])
    assert [check["name"] for check in report["checks"] if not check["ok"]] == ["camera"]
    assert report["checks"][-1] == {"name": "broker", "ok": True, "detail": "skipped (--skip-broker)"}


def test_the_command_with_an_unreadable_config_or_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["self-test", "--config", str(tmp_path / "missing.toml"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"ok": False, "error": f"{tmp_path / 'missing.toml'}: no such file",
                                                   "checks": []}
    assert main(["self-test", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["self-test"])
    assert usage.value.code == 2


def test_the_installed_command_in_its_own_process(tmp_path: Path, gate_dir: Path, broker: MosquittoBroker) -> None:
    """``python -m qrgate.cli self-test --json`` as provisioning runs it over SSH: the host's own clock here."""
    config = write_config(tmp_path / "gate.toml", gate_dir, broker.port)
    done = subprocess.run([sys.executable, "-m", "qrgate.cli", "self-test", "--config", str(config), "--json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    report = json.loads(done.stdout)
    assert [check["name"] for check in report["checks"]] == NAMES
    failed = [check for check in report["checks"] if not check["ok"]]
    # Only the host's clock can fail here (a container's is rarely synchronised); everything else is ours.
    assert [check["name"] for check in failed] in ([], ["clock"]), failed
    assert done.returncode == (0 if not failed else 1) and report["ok"] is (not failed)
