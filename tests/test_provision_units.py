"""The provisioner's parts that need no gate: paths under a root prefix, the rendered configuration, the target
checks' verdicts, wheel tags, the inventory's rules, the checklist, the batch views, and the CLI commands that
only talk to the device CA (an unreachable gate decommissioned, ``ca init``, ``ca crl``)."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qrgate.config_file import parse_config
from qrgate_provisioning.provision.batch import GateResult, PlainDisplay, RichDisplay, summary_text
from qrgate_provisioning.provision.checklist import Checklist, ProvisionError
from qrgate_provisioning.provision.checks import judge
from qrgate_provisioning.provision.cli import main
from qrgate_provisioning.provision.device_ca import DeviceCA
from qrgate_provisioning.provision.inventory import GateSpec, InventoryError, load_inventory, merge, spec_from
from qrgate_provisioning.provision.layout import Layout
from qrgate_provisioning.provision.render import config_hash_of, render_config, unit_file
from qrgate_provisioning.provision.wheels import Wheel, Wheelhouse
from qrgate_tools.broker import free_loopback_port

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(host="10.0.0.11", site="market-1", gate="gate-1", direction="in", board="rpi-gate-v1",
            broker="10.0.0.2:8884")


def spec(**values: object) -> GateSpec:
    return spec_from({**SPEC, **values}, where="test")


def test_every_gate_path_goes_under_the_root_prefix_and_the_unit_names_them() -> None:
    staged, gate = Layout("/srv/card"), Layout("/")
    assert (gate.key, gate.unit, gate.outbox) == ("/etc/qrgate/pki/device.key", "/etc/systemd/system/qrgate.service",
                                                  "/var/lib/qrgate/outbox.sqlite")
    assert staged.key == "/srv/card/etc/qrgate/pki/device.key" and staged.venv == "/srv/card/opt/qrgate/venv"
    original = (ROOT / "firmware" / "systemd" / "qrgate.service").read_text()
    assert gate.unit_text(original) == original
    text = unit_file(staged).data.decode()
    assert "ExecStart=/srv/card/opt/qrgate/venv/bin/qrgate run --config /srv/card/etc/qrgate/qrgate.toml" in text
    assert "ExecStartPre=/srv/card/opt/qrgate/venv/bin/qrgate check-config /srv/card/etc/qrgate/qrgate.toml" in text
    assert "Documentation=file:///opt/qrgate/README.md" in text  # a URL, not a path on the card


def test_the_configuration_is_the_safe_template_with_the_inventorys_row() -> None:
    text = render_config(spec(name="north-entrance", direction="out"), Layout("/"))
    config = parse_config(text)  # a real gate's file: the gate's own parser accepts it
    assert (config.device.id, config.device.site_id, config.device.gate, config.device.direction) == (
        "gate-1", "market-1", "north-entrance", "out")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.end_to_end_ack) == ("10.0.0.2", 8884, True)
    assert (config.mqtt.cert_file, config.mqtt.key_file) == ("/etc/qrgate/pki/device.pem", "/etc/qrgate/pki/device.key")
    assert config.trust.signers_dir == "/etc/qrgate/trust-signers" and config.camera.source == "picamera2"
    assert config.feedback.board == "rpi-gate-v1"
    assert render_config(spec(name="north-entrance", direction="out"), Layout("/")) == text  # deterministic
    assert config_hash_of(text) != config_hash_of(render_config(spec(direction="in"), Layout("/")))
    both_ways = parse_config(render_config(spec(direction="both"), Layout("/")))  # a single door: qrgate.passage
    assert both_ways.device.direction == "both"
    staged = parse_config(render_config(spec(), Layout("/srv/card")))
    assert staged.feedback.board == "/srv/card/usr/share/qrgate/hardware/profiles/rpi-gate-v1.toml"
    assert staged.outbox.path == "/srv/card/var/lib/qrgate/outbox.sqlite"


@pytest.mark.parametrize(("values", "message"), [
    ({"config": {"camera": {"source": "usb", "fps": "fast"}}}, "camera.fps"),
    ({"config": {"camerra": {"source": "usb"}}}, "unknown section"),
])
def test_a_row_the_gate_would_refuse_is_refused_before_touching_it(values: dict[str, object], message: str) -> None:
    with pytest.raises(ProvisionError, match=message):
        render_config(spec(**values), Layout("/"))


@pytest.mark.parametrize(("values", "message"), [
    ({"gate": "gate/1"}, "not a valid id"),
    ({"direction": "sideways"}, "direction"),
    ({"board": "Rpi Gate"}, "not a profile name"),
    ({"broker": ""}, "no broker"),
    ({"broker": "10.0.0.2:http"}, "not a number"),
    ({"config": {"mqtt": {"host": "elsewhere"}}}, "set by the inventory's columns"),
    ({"colour": "red"}, "unknown column"),
    ({"root": "relative/root"}, "absolute path"),
])
def test_inventory_values_are_checked_with_the_row_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(InventoryError, match=f"test: .*{message}"):
        spec(**values)


def test_inventory_files_layers_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text('[defaults]\nbroker = "10.0.0.2"\nsigners = ["keys/signer.pem"]\n[defaults.config.camera]\n'
                    'source = "usb"\n[[gate]]\nhost = "h1"\nsite = "s"\ngate = "g1"\ndirection = "in"\n'
                    'board = "rpi-gate-v1"\n[gate.config.camera]\nusb_device = 1\n')
    found = load_inventory(path)
    one = found.specs()[0]
    assert one.signers == (str(tmp_path / "keys" / "signer.pem"),) and one.broker_port == 8883
    assert one.config == {"camera": {"source": "usb", "usb_device": 1}}
    assert found.spec_for("g1", {"direction": "out"}).direction == "out"  # the command line wins for one gate
    assert merge({"a": "1"}, {"a": ""}, {"b": None}) == {"a": "1"}
    path.write_text(path.read_text() + '[[gate]]\nhost = "h2"\nsite = "s"\ngate = "g1"\ndirection = "in"\n'
                                       'board = "rpi-gate-v1"\n')
    with pytest.raises(InventoryError, match="gate g1 is also"):
        load_inventory(path).specs()
    bad = tmp_path / "gates.csv"
    bad.write_text("host,site,gate,board\nh,s,g,b\n")
    with pytest.raises(InventoryError, match="the header lacks direction"):
        load_inventory(bad)


PI_FACTS: dict[str, object] = {
    "machine": "aarch64", "python": "3.11.2", "os_id": "debian", "os_like": "", "os_version": "12",
    "os_name": "Debian GNU/Linux 12 (bookworm)", "disk_dir": "/", "disk_free": 20 * 1024**3,
    "disk_total": 30 * 1024**3, "read_only": False, "video": ["/dev/media0", "/dev/video0"],
    "gpio": ["/dev/gpiochip0"], "systemd": True, "pid1": "systemd", "clock": ["timesyncd"],
}


def wheel(name: str, python: str = "py3", abi: str = "none", platform: str = "any", size: int = 1000) -> Wheel:
    return Wheel(Path(f"{name}-1.0-{python}-{abi}-{platform}.whl"), name, "1.0", python, abi, platform, size, "0")


def verdicts(facts: dict[str, object], house: Wheelhouse, config: dict[str, dict[str, object]] | None = None,
             **options: bool) -> dict[str, tuple[bool, bool, str]]:
    return {j.item.name: (j.item.ok, j.blocking, j.item.detail) for j in judge(facts, config or {}, house, **options)}


def test_target_checks_on_a_pi_and_what_blocks() -> None:
    house = Wheelhouse((wheel("qrgate"),
                        wheel("numpy", "cp311", "cp311", "manylinux_2_17_aarch64.manylinux2014_aarch64"),
                        wheel("cryptography", "cp37", "abi3", "manylinux_2_28_aarch64")))
    good = verdicts(PI_FACTS, house)
    assert all(ok for ok, _, _ in good.values()), good
    wrong = verdicts({**PI_FACTS, "machine": "armv7l"}, house)
    assert wrong["architecture"][:2] == (False, True) and "is for manylinux_2_17_aarch64" in wrong["architecture"][2]
    newer = verdicts({**PI_FACTS, "python": "3.13.1"}, house)
    assert newer["python"][:2] == (False, True) and "--python 3.13" in newer["python"][2]
    assert verdicts({**PI_FACTS, "os_version": "11"}, house)["target os"][:2] == (False, True)
    full = verdicts({**PI_FACTS, "disk_free": 50 * 1024**2}, house)["free space"]
    assert full[:2] == (False, True) and "need at least 150 MB" in full[2]
    assert verdicts({**PI_FACTS, "read_only": True}, house)["free space"][:2] == (False, True)
    bare = verdicts({**PI_FACTS, "video": [], "gpio": [], "clock": []}, house)
    assert [bare[name][:2] for name in ("camera device", "gpio device", "clock")] == [(False, False)] * 3
    usb = verdicts(PI_FACTS, house, {"camera": {"source": "usb", "usb_device": 2}})["camera device"]
    assert not usb[0] and "/dev/video2" in usb[2]
    assert verdicts({**PI_FACTS, "clock": []}, house, allow_unsynced_clock=True)["clock"][0]


def test_the_checklist_says_what_changed_or_would() -> None:
    checklist = Checklist("gate-1")
    checklist.ok_item("ssh", "root@h")
    assert checklist.summary() == "gate-1: all 1 ok, nothing changed"
    checklist.changed_item("qrgate.toml", "written")
    assert checklist.render().splitlines()[1].startswith("changed qrgate.toml")
    checklist.failed("birth message", "not seen")
    assert checklist.summary() == "gate-1: 1 of 3 FAILED, 1 changed" and not checklist.ok
    check = Checklist("gate-1", check_only=True)
    check.changed_item("software", "install")
    assert check.render().startswith("would   software") and check.summary().endswith("1 would change")


def test_the_batch_views_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    specs = [spec(gate="gate-1"), spec(gate="gate-2", host="10.0.0.12")]
    good, bad = Checklist("gate-1"), Checklist("gate-2")
    good.changed_item("software", "installed")
    bad.failed("ssh", "cannot reach 10.0.0.12:22 over SSH")
    results = [GateResult(specs[0], good, 21.0), GateResult(specs[1], bad, 0.2)]
    for view in (PlainDisplay(io.StringIO()), RichDisplay(specs)):
        for result in results:
            view.started(result.spec)
            view.step(result.spec.gate, "software")
            view.finished(result)
        view.close()
    text = summary_text(results)
    assert "gate-2  10.0.0.12  FAILED" in text and "ssh: cannot reach" in text
    assert text.splitlines()[-1] == "1 of 2 gates ok, 1 failed"
    assert "gate-1" in capsys.readouterr().err  # rich's live table went to stderr


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(args))
    return status, out.getvalue()


def _issue(ca: DeviceCA, gate: str) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gate)])).sign(key, hashes.SHA256()))
    issued = ca.sign(csr.public_bytes(serialization.Encoding.PEM), gate_id=gate, inventory_ids={gate},
                     action="provision", technician="tester", software_version="test")
    return issued.serial


def test_ca_init_crl_and_decommissioning_a_gate_that_is_unreachable(tmp_path: Path) -> None:
    ca_dir = tmp_path / "device-ca"
    status, out = _cli("ca", "init", str(ca_dir), "--name", "qrgate test devices")
    assert status == 0 and "created" in out
    serial = _issue(DeviceCA.open(ca_dir), "gate-9")
    crl = tmp_path / "crl.pem"
    started = time.monotonic()
    status, out = _cli("decommission", "gate-9", "--ca", str(ca_dir), "--host", "127.0.0.1", "--ssh-port",
                       str(free_loopback_port()), "--crl-out", str(crl), "--technician", "tester")
    print(out)
    assert status == 0, out
    assert "gate reachable" in out and "no (cannot reach" in out and "revoking all the same" in out
    assert "unreachable from here" in out and "retained topics" in out
    assert DeviceCA.open(ca_dir).active("gate-9") is None
    assert x509.load_pem_x509_crl(crl.read_bytes()).get_revoked_certificate_by_serial_number(serial) is not None
    assert time.monotonic() - started < 10
    status, out = _cli("decommission", "gate-9", "--ca", str(ca_dir), "--technician", "tester")
    assert status == 1 and "no active certificate" in out  # nothing left to revoke
    status, out = _cli("ca", "crl", "--ca", str(ca_dir), "--out", str(tmp_path / "again.pem"))
    assert status == 0 and "1 revoked" in out
