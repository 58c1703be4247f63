"""The province's operator keys on a gate: ``--operator-keys FILE`` (or the inventory's ``operator_keys``) installs the
province's operators.json as /etc/qrgate/operators.json and turns ``[remote]`` on in qrgate.toml; without it the
commands stay off and nothing is installed. The file is checked on the laptop by the gate's own loader before any
gate is touched. One end-to-end run against the real sshd: the file lands, the configuration names it, the daemon
loads it, a second run changes nothing, and a changed file is re-installed with the daemon restarted.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mqtt_helpers import wait_until
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
from qrgate.config_file import parse_config
from qrgate_provisioning.province.command_signing import OperatorKey, operator_keys_file
from qrgate_provisioning.provision.checklist import ProvisionError
from qrgate_provisioning.provision.cli import build_parser, main
from qrgate_provisioning.provision.commands.common import overrides
from qrgate_provisioning.provision.device_ca import DeviceCA
from qrgate_provisioning.provision.inventory import GateSpec, InventoryError, load_inventory, spec_from
from qrgate_provisioning.provision.layout import Layout
from qrgate_provisioning.provision.render import DesiredFile, desired_files, render_config
from qrgate_tools.broker import free_loopback_port
from sshd_helpers import Sshd

ROW = dict(host="10.0.0.11", site="market-1", gate="gate-1", direction="in", board="rpi-gate-v1",
           broker="10.0.0.2:8884")
GATE = "gate-k"


def keys_file(path: Path, *kids: str) -> Path:
    """An operators.json as the province makes it (qrgate-province command-key new), one fresh key per kid."""
    path.write_text(operator_keys_file([OperatorKey(kid, Ed25519PrivateKey.generate()) for kid in kids]))
    return path


def spec_with(tmp_path: Path, **values: object) -> GateSpec:
    signer = tmp_path / "province-signer.pem"
    signer.write_bytes(b"-----BEGIN PUBLIC KEY-----\n")  # only copied here, never parsed
    return spec_from({**ROW, "signers": [str(signer)], **values}, where="test")


def files_by_path(spec: GateSpec, layout: Layout) -> dict[str, DesiredFile]:
    return {item.path: item for item in desired_files(spec, layout, broker_ca_pem=b"ca")}


def remote_section(text: str) -> str:
    return text.split("\n[remote]\n", 1)[1].split("\n[", 1)[0]


def test_the_keys_turn_the_commands_on_and_install_as_operators_json(tmp_path: Path) -> None:
    keys = keys_file(tmp_path / "province-operators.json", "ops-2026")
    spec = spec_with(tmp_path, operator_keys=str(keys))
    config = parse_config(render_config(spec, Layout("/")))
    assert (config.remote.operator_keys, config.remote.nonces_path) == ("/etc/qrgate/operators.json",
                                                                         "/var/lib/qrgate/command-nonces.sqlite")
    staged = parse_config(render_config(spec, Layout("/srv/card")))  # the daemon reads and writes under the prefix
    assert (staged.remote.operator_keys, staged.remote.nonces_path) == (
        "/srv/card/etc/qrgate/operators.json", "/srv/card/var/lib/qrgate/command-nonces.sqlite")
    installed = files_by_path(spec, Layout("/"))["/etc/qrgate/operators.json"]
    assert (installed.data, installed.mode, installed.owner, installed.group, installed.name) == (
        keys.read_bytes(), 0o640, "root", "qrgate", "operator keys")


def test_without_the_keys_the_commands_stay_off_and_nothing_is_installed(tmp_path: Path) -> None:
    spec = spec_with(tmp_path)
    text = render_config(spec, Layout("/"))
    assert parse_config(text).remote.operator_keys is None
    assert remote_section(text).strip() == ""  # the template's [remote]: nothing set, nonces_path not even
    assert not [path for path in files_by_path(spec, Layout("/")) if "operators" in path]
    with_keys = render_config(spec_with(tmp_path, operator_keys=str(keys_file(tmp_path / "ops.json", "a"))),
                              Layout("/"))
    assert with_keys.replace(remote_section(with_keys), "") == text.replace(remote_section(text), "")  # only [remote]


def _entry(raw: bytes = b"\x01" * 32, kid: str = "ops-2026") -> dict[str, str]:
    return {"kid": kid, "public_key": base64.b64encode(raw).decode()}


@pytest.mark.parametrize(("content", "message"), [
    ("not json {", "not an operator key list"),
    (json.dumps([_entry()]), "not an operator key list"),  # a bare list, not {"keys": [...]}
    (json.dumps({"keys": [_entry(b"\x01" * 31)]}), "32 bytes"),
    (json.dumps({"keys": [{"kid": "ops-2026", "public_key": "not base64!"}]}), "base64"),
    (json.dumps({"keys": [{"kid": "ops-2026"}]}), "public_key"),
    (json.dumps({"keys": []}), "no key listed"),
    (json.dumps({"keys": [_entry(), _entry(b"\x02" * 32)]}), "listed twice"),
])
def test_a_keys_file_the_gate_would_refuse_is_refused_on_the_laptop(tmp_path: Path, content: str,
                                                                    message: str) -> None:
    bad = tmp_path / "operators.json"
    bad.write_text(content)
    with pytest.raises(ProvisionError, match=message) as raised:
        files_by_path(spec_with(tmp_path, operator_keys=str(bad)), Layout("/"))
    assert str(bad) in str(raised.value)  # the message names the file


def test_a_missing_keys_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match=r"operator keys .*missing\.json: cannot read on this laptop"):
        files_by_path(spec_with(tmp_path, operator_keys=str(tmp_path / "missing.json")), Layout("/"))


def test_the_inventory_and_the_command_line_name_the_keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "gates.toml"
    toml.write_text('[defaults]\noperator_keys = "province/operators.json"\nbroker = "10.0.0.2"\n[[gate]]\n'
                    + "".join(f'{key} = "{value}"\n' for key, value in ROW.items() if key != "broker"))
    assert load_inventory(toml).specs()[0].operator_keys == str(tmp_path / "province" / "operators.json")
    csv = tmp_path / "gates.csv"
    csv.write_text("host,site,gate,direction,board,broker,operator_keys\n"
                   "10.0.0.11,market-1,gate-1,in,rpi-gate-v1,10.0.0.2,ops.json\n")
    assert load_inventory(csv).specs()[0].operator_keys == str(tmp_path / "ops.json")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["gate", "10.0.0.11", "--gate", "gate-1", "--operator-keys", "ops.json"])
    assert overrides(args)["operator_keys"] == str(tmp_path / "ops.json")  # relative to where the command runs
    batch = build_parser().parse_args(["batch", str(toml), "--operator-keys", "/srv/ops.json"])
    assert load_inventory(toml).specs(over_defaults=overrides(batch))[0].operator_keys == "/srv/ops.json"
    # The column owns the setting: the config table may not point the gate at a file the provisioner never installs.
    with pytest.raises(InventoryError, match=r"remote\.operator_keys is set by the inventory's columns"):
        spec_from({**ROW, "config": {"remote": {"operator_keys": "/etc/qrgate/operators.json"}}}, where="test")


def test_a_bad_keys_file_stops_the_run_before_the_gate_is_reached(tmp_path: Path) -> None:
    DeviceCA.create(tmp_path / "device-ca", "qrgate test devices")
    wheel = tmp_path / "qrgate-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"never sent")
    signer, trust_list, bad = tmp_path / "signer.pem", tmp_path / "trust-list.cose", tmp_path / "operators.json"
    signer.write_bytes(b"-")
    trust_list.write_bytes(b"-")
    bad.write_text(json.dumps({"keys": [_entry(b"\x01" * 16)]}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["gate", "127.0.0.1", "--gate", "gate-1", "--site", "market-1", "--direction", "in", "--board",
                       "rpi-gate-v1", "--broker", "127.0.0.1", "--ca", str(tmp_path / "device-ca"), "--technician",
                       "tester", "--ssh-port", str(free_loopback_port()), "--wheel", str(wheel), "--signer",
                       str(signer), "--trust-list", str(trust_list), "--operator-keys", str(bad)])
    print(out.getvalue())
    assert status == 1
    assert re.search(r"^FAILED\s+inventory\s+gate-1: operator keys .*32 bytes", out.getvalue(), re.MULTILINE)
    assert "ssh" not in out.getvalue().split()  # no connection was even tried


# --- end to end, against the real sshd --------------------------------------------------------------------------


@pytest.mark.slow
def test_provisioning_installs_the_keys_turns_commands_on_and_a_rerun_changes_nothing(
        sshd: Sshd, software: tuple[Path, Path], province: Province, tmp_path: Path) -> None:
    wheel, deps = software
    traversable(tmp_path)
    ca = DeviceCA.create(tmp_path / "device-ca", "qrgate market-1 devices")
    world = SiteWorld(tmp_path / "broker", ca)
    root = tmp_path / "card"
    make_image_venv(root, deps)
    (tmp_path / "province").mkdir()
    keys = keys_file(tmp_path / "province" / "operators.json", "ops-2026")
    inventory = write_inventory(tmp_path / "inventory.toml", province=province, world=world, gates=[dict(
        host="127.0.0.1", site=SITE, gate=GATE, direction="in", board="rpi-gate-v1", root=str(root),
        operator_keys=str(keys))])
    args = ["gate", "127.0.0.1", "--gate", GATE, "--inventory", str(inventory), *reach_args(sshd, tmp_path /
            "device-ca", world), *install_args(wheel)]
    installed, config_file = root / "etc/qrgate/operators.json", root / "etc/qrgate/qrgate.toml"
    pid_file, log = root / "run/qrgate-provision/qrgate.pid", root / "run/qrgate-provision/qrgate.log"
    world.broker.start()
    try:
        status, out = _run(args)
        assert status == 0, out
        assert "operator keys" in _names(out, "changed")
        assert {"check-config", "birth message"} <= _names(out, "ok")  # the gate's own loader took the file too
        assert installed.read_bytes() == keys.read_bytes()
        assert (installed.stat().st_mode & 0o777, installed.owner(), installed.group()) == (0o640, "root", "qrgate")
        remote = parse_config(config_file.read_text()).remote
        assert (remote.operator_keys, remote.nonces_path) == (str(installed),
                                                              str(root / "var/lib/qrgate/command-nonces.sqlite"))
        wait_until(lambda: "commands on: 1 operator key(s)" in log.read_text(), 30, "the daemon to load the keys")

        watched = [installed, config_file, pid_file]
        before = {path: path.stat().st_mtime_ns for path in watched}
        pid = pid_file.read_text()
        status, out = _run(args)
        assert status == 0, out
        assert _names(out, "changed") == set() and "operator keys" in _names(out, "ok")
        assert f"{GATE}: nothing to change" in out
        assert {path: path.stat().st_mtime_ns for path in watched} == before and pid_file.read_text() == pid

        keys_file(keys, "ops-2026", "ops-2027")  # the province adds a key: re-installed, the daemon restarted
        status, out = _run(args)
        assert status == 0, out
        assert _names(out, "changed") == {"operator keys", "unit stopped", "unit started"}
        assert installed.read_bytes() == keys.read_bytes() and pid_file.read_text() != pid
        assert config_file.stat().st_mtime_ns == before[config_file]  # the same configuration: not rewritten
        assert "birth message" in _names(out, "ok")
        wait_until(lambda: "commands on: 2 operator key(s)" in log.read_text(), 30, "the daemon to load both keys")
    finally:
        stop_daemon(root)
        world.broker.stop()


def _run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        status = main(args)
    print(out.getvalue(), f"(the run took {time.monotonic() - started:.1f} s)")
    return status, out.getvalue()


def _names(out: str, status: str) -> set[str]:
    """The checklist's item names of one status (a name may hold single spaces; two separate it from the detail)."""
    return {line[8:].split("  ")[0].strip() for line in out.splitlines()
            if line[:8].rstrip() == status and line[7:8] == " "}
