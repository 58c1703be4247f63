"""``qrgate-provision`` against a real sshd on loopback, one gate's life in order: provisioned end to end (a green
checklist, the daemon online on the real site broker with the certificate just issued), a second run that changes
nothing, ``--check``, the gate's own topics and no other's, a changed inventory row, renew, replace (a new SD
card) and decommission (its certificate then refused by the broker).

The tests of this module share one site (broker, device CA) and one gate, and run in file order: each starts
from the state the one before left. See provision_helpers.py for what stands in for a Pi here.
"""

from __future__ import annotations

import contextlib
import io
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from provision_helpers import (
    SITE,
    Province,
    SiteWorld,
    install_args,
    make_image_venv,
    reach_args,
    stop_daemon,
    traversable,
    write_inventory,
)
from qrgate import wire
from qrgate_provisioning.provision.cli import main
from qrgate_provisioning.provision.device_ca import DeviceCA
from sshd_helpers import Sshd

pytestmark = pytest.mark.slow
GATE = "gate-a"


@dataclass
class Run:
    status: int
    out: str
    seconds: float

    def lines(self, status: str) -> list[str]:
        """The checklist lines of one status (ok, changed, would, FAILED)."""
        return [line for line in self.out.splitlines() if line[:8].rstrip() == status and line[7:8] == " "]

    def names(self, status: str) -> set[str]:
        """The item names of those lines (a name may hold single spaces; two separate it from the detail)."""
        return {line[8:].split("  ")[0].strip() for line in self.lines(status)}


def run_cli(args: list[str]) -> Run:
    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        status = main(args)
    seconds = time.monotonic() - started
    print(out.getvalue())
    return Run(status, out.getvalue(), seconds)


@dataclass
class Gate:
    root: Path
    inventory: Path
    ca_dir: Path
    ca: DeviceCA
    world: SiteWorld
    reach: list[str]  # CA, SSH, observer
    install: list[str]  # wheel, clock
    first: Run
    province: Province

    def gate_args(self, *extra: str, command: str = "gate") -> list[str]:
        return [command, "127.0.0.1", "--gate", GATE, "--inventory", str(self.inventory), *self.reach, *self.install,
                *extra]

    def lifecycle_args(self, command: str, *extra: str) -> list[str]:
        return [command, GATE, "--inventory", str(self.inventory), "--crl-out", str(self.world.device_crl),
                *self.reach, *extra]

    def write_row(self, **row: object) -> None:
        values = dict(host="127.0.0.1", site=SITE, gate=GATE, direction="in", board="rpi-gate-v1",
                      root=str(self.root))
        values.update(row)
        write_inventory(self.inventory, province=self.province, world=self.world, gates=[values])

    def path(self, gate_path: str) -> Path:
        return self.root / gate_path.lstrip("/")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DeviceCA, SiteWorld]]:
    workdir = tmp_path_factory.mktemp("site")
    ca = DeviceCA.create(workdir / "device-ca", "qrgate market-1 devices")
    world = SiteWorld(workdir / "broker", ca)
    world.broker.start()
    yield workdir / "device-ca", ca, world
    world.broker.stop()


@pytest.fixture(scope="module")
def gate(site, sshd: Sshd, software, province: Province,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    ca_dir, ca, world = site
    wheel, deps = software
    workdir = tmp_path_factory.mktemp("gate")
    traversable(workdir)
    root = workdir / "card-1"
    make_image_venv(root, deps)
    found = Gate(root, workdir / "inventory.toml", ca_dir, ca, world, reach_args(sshd, ca_dir, world),
                 install_args(wheel), Run(0, "", 0.0), province)
    found.write_row()
    found.first = run_cli(found.gate_args())
    yield found
    stop_daemon(found.root)


def subject_cn(pem: bytes) -> str:
    return str(x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_one_gate_end_to_end_gives_a_green_checklist(gate: Gate) -> None:
    run = gate.first
    print(f"one gate, first run: {run.seconds:.1f} s")
    assert run.status == 0, run.out
    assert run.lines("FAILED") == []
    assert "will change: software" in run.out  # the plan is printed before anything changes
    assert {"software", "identity", "qrgate.toml", "unit file", "trust list", "revocation list", "outbox",
            "unit enabled", "unit started"} <= run.names("changed")
    assert {"check-config", "self-test camera", "self-test broker", "self-test trust", "birth message",
            "unit verify"} <= run.names("ok")
    assert f"{GATE}: all " in run.out.splitlines()[-1]
    # The identity: made on the gate (0600, the service user's), certified by the device CA, CN = the gate id.
    key = gate.path("/etc/qrgate/pki/device.key")
    assert (key.stat().st_mode & 0o777, key.owner()) == (0o600, "qrgate")
    cert_pem = gate.path("/etc/qrgate/pki/device.pem").read_bytes()
    assert subject_cn(cert_pem) == GATE
    active = gate.ca.active(GATE)
    assert active is not None and active.cert_pem == cert_pem and active.action == "provision"
    assert not gate.path("/etc/qrgate/pki/device.key.new").exists()
    config = gate.path("/etc/qrgate/qrgate.toml")
    assert (config.stat().st_mode & 0o777, config.owner(), config.group()) == (0o640, "root", "qrgate")
    text = config.read_text()
    assert 'host = "127.0.0.1"\n' in text and f"port = {gate.world.params.port}\n" in text
    assert "end_to_end_ack = false" in text and f'signers_dir = "{gate.root}/etc/qrgate/trust-signers"' in text
    assert gate.path("/etc/systemd/system/multi-user.target.wants/qrgate.service").is_symlink()
    outbox = gate.path("/var/lib/qrgate/outbox.sqlite")
    assert (outbox.stat().st_mode & 0o777, outbox.owner()) == (0o600, "qrgate")
    actions = [(e.get("action"), e.get("outcome")) for e in gate.ca.audit.entries() if e.get("gate_id") == GATE]
    assert ("provision", "issued") in actions and ("provision_run", "ok") in actions
    # No secret anywhere the laptop keeps or shows: the private key never left the gate.
    assert "PRIVATE KEY" not in run.out and "PRIVATE KEY" not in gate.ca.audit.path.read_text()


def test_a_second_run_changes_nothing_and_says_so(gate: Gate) -> None:
    watched = ["/etc/qrgate/pki/device.key", "/etc/qrgate/pki/device.pem", "/etc/qrgate/qrgate.toml",
               "/run/qrgate-provision/qrgate.pid", "/opt/qrgate/venv/.qrgate-wheel"]
    before = {path: gate.path(path).stat().st_mtime_ns for path in watched}
    pid = gate.path("/run/qrgate-provision/qrgate.pid").read_text()
    run = run_cli(gate.gate_args())
    print(f"one gate, second run: {run.seconds:.1f} s")
    assert run.status == 0, run.out
    assert run.lines("changed") == [] and run.lines("FAILED") == []
    assert f"{GATE}: nothing to change" in run.out and run.out.splitlines()[-1].endswith("nothing changed")
    assert {path: gate.path(path).stat().st_mtime_ns for path in watched} == before
    assert gate.path("/run/qrgate-provision/qrgate.pid").read_text() == pid
    assert len(gate.ca.records(GATE)) == 1


def test_check_reports_no_difference_and_changes_nothing(gate: Gate) -> None:
    run = run_cli(gate.gate_args("--check"))
    assert run.status == 0, run.out
    assert run.lines("would") == [] and run.out.splitlines()[-1].endswith("nothing to change")


def test_the_new_certificate_publishes_the_gates_own_topics_and_not_another_gates(gate: Gate) -> None:
    stop_daemon(gate.root)  # one connection per certificate: the broker makes the CN the client id
    acks: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GATE, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(gate.world.pki.ca_file), certfile=str(gate.path("/etc/qrgate/pki/device.pem")),
                   keyfile=str(gate.path("/etc/qrgate/pki/device.key")))
    client.on_publish = lambda _c, _u, _mid, reason, _p: (acks.append(str(reason)), done.set())
    client.connect("127.0.0.1", gate.world.params.port)
    client.loop_start()
    try:
        for topic in (wire.telemetry_topic(GATE), wire.checkin_topic("gate-b"), wire.status_topic("gate-b")):
            done.clear()
            client.publish(topic, b'{"v":1}', qos=1)
            assert done.wait(5), f"no PUBACK for {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    assert acks[0] in ("Success", "No matching subscribers")
    assert acks[1:] == ["Not authorized", "Not authorized"]


def test_a_changed_inventory_row_changes_only_what_differs(gate: Gate) -> None:
    gate.write_row(direction="out", name="north-exit")
    key_before = gate.path("/etc/qrgate/pki/device.key").stat().st_mtime_ns
    config_before = gate.path("/etc/qrgate/qrgate.toml").read_text()
    check = run_cli(gate.gate_args("--check"))
    assert check.status == 0, check.out
    assert check.names("would") == {"qrgate.toml", "unit"}  # the file, and the unit the test above stopped
    assert gate.path("/etc/qrgate/qrgate.toml").read_text() == config_before
    run = run_cli(gate.gate_args())
    assert run.status == 0, run.out
    assert run.names("changed") == {"qrgate.toml", "unit started"}
    text = gate.path("/etc/qrgate/qrgate.toml").read_text()
    assert 'direction = "out"' in text and 'gate = "north-exit"' in text
    assert gate.path("/etc/qrgate/pki/device.key").stat().st_mtime_ns == key_before
    assert "birth message" in run.names("ok")


def test_renew_makes_a_new_key_on_the_gate_and_revokes_the_old_certificate(gate: Gate) -> None:
    old = gate.ca.active(GATE)
    assert old is not None
    run = run_cli(gate.lifecycle_args("renew"))
    assert run.status == 0, run.out
    new = gate.ca.active(GATE)
    assert new is not None and new.serial != old.serial and new.action == "renew"
    assert new.key_fingerprint != old.key_fingerprint
    assert new.cert_pem == gate.path("/etc/qrgate/pki/device.pem").read_bytes()
    revoked = {r.serial: r for r in gate.ca.records(GATE)}[old.serial]
    assert (revoked.status, revoked.revocation_reason) == ("revoked", "superseded")
    key = gate.path("/etc/qrgate/pki/device.key")
    assert (key.stat().st_mode & 0o777, key.owner()) == (0o600, "qrgate")
    assert not gate.path("/etc/qrgate/pki/device.key.new").exists()
    assert {"identity", "unit restarted", "crl"} <= run.names("changed") and "birth message" in run.names("ok")


def test_replace_puts_the_gate_on_a_new_sd_card_and_revokes_the_old_cards_certificate(
        gate: Gate, software: tuple[Path, Path]) -> None:
    old = gate.ca.active(GATE)
    assert old is not None
    stop_daemon(gate.root)  # the old card is out of the Pi
    new_card = gate.root.with_name("card-2")
    make_image_venv(new_card, software[1])
    gate.root = new_card
    gate.write_row(direction="out", name="north-exit")
    refused = run_cli(gate.gate_args("--check"))  # `gate` on the new card: the CA's certificate is for another key
    assert refused.status == 1 and "identity" in refused.names("FAILED") and "replace" in refused.out
    run = run_cli(gate.gate_args(command="replace"))
    print(f"replace (a new card, provisioned end to end): {run.seconds:.1f} s")
    assert run.status == 0, run.out
    new = gate.ca.active(GATE)
    assert new is not None and new.action == "replace"
    assert new.cert_pem == gate.path("/etc/qrgate/pki/device.pem").read_bytes()
    revoked = {r.serial: r for r in gate.ca.records(GATE)}[old.serial]
    assert (revoked.status, revoked.revocation_reason) == ("revoked", "key_compromise")


def test_decommission_revokes_clears_the_topics_and_the_broker_refuses_the_certificate(gate: Gate,
                                                                                     tmp_path: Path) -> None:
    cert, key = tmp_path / "gate.pem", tmp_path / "gate.key"
    cert.write_bytes(gate.path("/etc/qrgate/pki/device.pem").read_bytes())
    key.write_bytes(gate.path("/etc/qrgate/pki/device.key").read_bytes())
    assert _retained(gate.world, wire.status_topic(GATE))  # the gate's retained status, before
    run = run_cli(gate.lifecycle_args("decommission"))
    assert run.status == 0, run.out
    assert gate.ca.active(GATE) is None
    assert {"unit", "retained topics", "identity on the gate", "certificate", "crl"} <= run.names("changed")
    assert "0 pending" in run.out
    assert not gate.path("/etc/qrgate/pki/device.key").exists()
    assert not gate.path("/run/qrgate-provision/qrgate.pid").exists()
    assert not gate.path("/etc/systemd/system/multi-user.target.wants/qrgate.service").exists()
    assert _retained(gate.world, wire.status_topic(GATE)) is None  # cleared
    assert _retained(gate.world, wire.availability_topic(GATE)) is None
    _connect_once(gate.world, cert, key, GATE)  # still accepted: the broker has not read the new CRL yet
    gate.world.restart()  # mosquitto reads the CRL the provisioner wrote (restart also cuts open connections)
    with pytest.raises((ssl.SSLError, OSError)):
        _connect_once(gate.world, cert, key, GATE)
    _connect_once(gate.world, gate.world.observer.cert, gate.world.observer.key, "observer")  # others still are


def _retained(world: SiteWorld, topic: str) -> bytes | None:
    got: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(world.pki.ca_file), certfile=str(world.observer.cert), keyfile=str(world.observer.key))
    client.on_message = lambda _c, _u, message: got.append(bytes(message.payload))
    client.connect("127.0.0.1", world.params.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def _connect_once(world: SiteWorld, cert: Path, key: Path, client_id: str) -> None:
    """A TLS handshake with ``cert``; raises if the broker refuses it."""
    context = ssl.create_default_context(cafile=str(world.pki.ca_file))
    context.load_cert_chain(str(cert), str(key))
    import socket

    with socket.create_connection(("127.0.0.1", world.params.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        # TLS 1.3: a refused client certificate shows on the first read, not in the handshake.
        tls.sendall(bytes([0x10, 0x0c, 0x00, 0x04]) + b"MQTT" + bytes([0x04, 0x02, 0x00, 0x3c, 0x00, 0x00]))
        if not tls.recv(4):
            raise ConnectionError(f"{client_id}: the broker closed the connection")
