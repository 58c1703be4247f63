"""What the gate's files should contain: rendered on the laptop, compared on the gate, written only if different.

The configuration starts from firmware/qrgate.example.toml, the safe template (end-to-end acks, signed lists,
mutual TLS, a real camera), and sets what the inventory says: the device, site, gate and direction, the board,
the broker, and every path under the target's root prefix. With the province's operator keys (``operator_keys``)
it also turns the signed commands on (``[remote]``); without them ``[remote]`` stays as the template has it, off.
The inventory's ``config`` table may add settings on top (a demo gate's synthetic camera, a relay-less board);
the columns' own settings it may not touch.
The output is deterministic (sections in the configuration's order, keys sorted), so its hash only changes
when a setting does, and that hash is what the gate's status reports (``config_hash``) after a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrgate.board import profiles_dir
from qrgate.config import GateConfig
from qrgate.config_file import parse_config
from qrgate.errors import ConfigError
from qrgate.remote.auth import OperatorKeys

from .checklist import ProvisionError
from .inventory import GateSpec
from .layout import SERVICE_USER, Layout

FIRMWARE_ENV = "QRGATE_FIRMWARE_DIR"
INSTALLED_FIRMWARE_DIR = Path("/usr/share/qrgate/firmware")
SECTIONS = tuple(GateConfig.model_fields)


@dataclass(frozen=True, slots=True)
class DesiredFile:
    """A file as it should be on the gate."""

    path: str
    data: bytes
    mode: int
    owner: str = "root"
    group: str = "root"
    label: str = ""  # the checklist's name for it

    @property
    def name(self) -> str:
        return self.label or self.path.rsplit("/", 1)[-1]


def firmware_dir() -> Path:
    """$QRGATE_FIRMWARE_DIR, this checkout's firmware/, or /usr/share/qrgate/firmware."""
    override = os.environ.get(FIRMWARE_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[3] / "firmware"
    if checkout.is_dir() or not INSTALLED_FIRMWARE_DIR.is_dir():
        return checkout
    return INSTALLED_FIRMWARE_DIR


def _read_local(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProvisionError(f"{what} {path}: cannot read on this laptop: {exc.strerror or exc}") from None


def config_data(spec: GateSpec, layout: Layout) -> dict[str, dict[str, Any]]:
    """The configuration as TOML tables: the example's settings, the inventory's, the target's paths."""
    example = tomllib.loads(_read_local(firmware_dir() / "qrgate.example.toml", "the template").decode())
    data: dict[str, dict[str, Any]] = {section: dict(table) for section, table in example.items()}
    for section, table in spec.config.items():
        data.setdefault(section, {}).update(table)
    board = spec.board if not layout.prefixed else layout.profile(spec.board)
    data["device"].update(id=spec.gate, site_id=spec.site, gate=spec.label, direction=spec.direction)
    data.setdefault("feedback", {})["board"] = board
    data["trust"].update(paths=[layout.trust], signers_dir=layout.signers, state_dir=layout.state_dir,
                         drop_dir=layout.drop_dir)
    data.setdefault("outbox", {})["path"] = layout.outbox
    data["mqtt"].update(host=spec.broker_host, port=spec.broker_port, ca_file=layout.broker_ca,
                        cert_file=layout.cert, key_file=layout.key)
    if spec.operator_keys:  # only then: a gate without the province's keys subscribes to no command topic at all
        data.setdefault("remote", {}).update(operator_keys=layout.operator_keys, nonces_path=layout.command_nonces)
    return data


def render_config(spec: GateSpec, layout: Layout) -> str:
    """The qrgate.toml text for ``spec``; ProvisionError if the gate's own parser would refuse it."""
    data = config_data(spec, layout)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ProvisionError(f"{spec.where or spec.gate}: config has unknown section(s) {', '.join(unknown)}")
    lines = [
        f"# /etc/qrgate/qrgate.toml of gate {spec.gate} (site {spec.site}), written by qrgate-provision from",
        "# firmware/qrgate.example.toml and the inventory. Do not edit it on the gate: change the inventory and",
        "# run qrgate-provision again (it replaces this file when it differs).",
    ]
    for section in SECTIONS:
        if section in data:
            _emit(lines, section, data[section])
    text = "\n".join(lines) + "\n"
    try:
        parse_config(text, f"{spec.gate}'s qrgate.toml")
    except ConfigError as exc:  # the gate would refuse it too: say so before touching the gate
        raise ProvisionError(str(exc)) from None
    return text


def _emit(lines: list[str], table: str, values: Mapping[str, Any]) -> None:
    lines.append("")
    lines.append(f"[{table}]")
    nested = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, Mapping) and key != "pins":
            nested.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in nested:
        _emit(lines, f"{table}.{key}", value)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise ProvisionError(f"no TOML form for a {type(value).__name__} in the inventory's config")


def config_hash_of(text: str) -> str:
    """What the daemon reports as ``config_hash`` for this file (qrgate.service.GateService.config_hash)."""
    config = parse_config(text, "qrgate.toml", demo=True)
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def unit_file(layout: Layout) -> DesiredFile:
    original = _read_local(firmware_dir() / "systemd" / "qrgate.service", "the unit").decode()
    return DesiredFile(layout.unit, layout.unit_text(original).encode(), 0o644, label="unit file")


def desired_files(spec: GateSpec, layout: Layout, *, broker_ca_pem: bytes) -> list[DesiredFile]:
    """Every file the provisioner owns on the gate except the identity and the signed lists."""
    group = SERVICE_USER
    files = [DesiredFile(layout.config, render_config(spec, layout).encode(), 0o640, "root", group, "qrgate.toml")]
    files.append(DesiredFile(layout.broker_ca, broker_ca_pem, 0o644, "root", group, "broker CA"))
    profile = profiles_dir() / f"{spec.board}.toml"
    if not profile.is_file():
        names = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.toml"))) or "none"
        raise ProvisionError(f"{spec.gate}: board {spec.board!r}: no {profile} on this laptop (profiles: {names})")
    files.append(DesiredFile(layout.profile(spec.board), profile.read_bytes(), 0o644, label=f"board {spec.board}"))
    if not spec.signers:
        raise ProvisionError(f"{spec.gate}: no list signers: the template accepts signed lists only from the "
                             "province's pinned signing keys; give signers = [\"signer.pem\", ...] (or --signer)")
    for signer in spec.signers:
        name = Path(signer).name if signer.endswith(".pem") else Path(signer).name + ".pem"
        files.append(DesiredFile(f"{layout.signers}/{name}", _read_local(signer, "list signer"), 0o640, "root",
                                 group, f"signer {name}"))
    for anchor in spec.anchors:
        name = Path(anchor).name
        files.append(DesiredFile(f"{layout.trust}/{name}", _read_local(anchor, "trust anchor"), 0o640, "root", group,
                                 f"anchor {name}"))
    if spec.operator_keys:
        files.append(operator_keys_file(spec, layout))
    files.append(unit_file(layout))
    return files


def operator_keys_file(spec: GateSpec, layout: Layout) -> DesiredFile:
    """The province's operators.json, installed as it came, once the gate's own loader has accepted it here: on the
    gate a refused file would only show after the old configuration was replaced, as a unit that will not start."""
    path = spec.operator_keys
    data = _read_local(path, "operator keys")
    try:
        keys = OperatorKeys.load(path)
    except ConfigError as exc:
        raise ProvisionError(f"{spec.gate}: operator keys {exc}") from None
    if not keys.keys:
        raise ProvisionError(f"{spec.gate}: operator keys {path}: no key listed, so the gate would obey no one; leave "
                             "operator_keys out to keep its commands off")
    if len(keys.keys) != len(json.loads(data)["keys"]):  # the loader keeps the last of two entries with one kid
        raise ProvisionError(f"{spec.gate}: operator keys {path}: a kid is listed twice; give each key its own kid")
    return DesiredFile(layout.operator_keys, data, 0o640, "root", SERVICE_USER, "operator keys")


def signed_lists(spec: GateSpec) -> list[tuple[str, bytes]]:
    """The signed trust list and revocation snapshot to hand the gate, as (kind, document)."""
    documents = []
    if not spec.trust_list:
        raise ProvisionError(f"{spec.gate}: no trust list: give the province's signed trust list (trust_list = "
                             "\"trust-list.cose\" in the inventory, or --trust-list)")
    documents.append(("trust list", _read_local(spec.trust_list, "trust list")))
    if spec.revocation:
        documents.append(("revocation list", _read_local(spec.revocation, "revocation list")))
    return documents
