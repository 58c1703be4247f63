"""The inventory: which gate is which device, where it is and what it is wired to.

One row per gate: ``host`` (how the laptop reaches the Pi), ``site``, ``gate`` (the device id: certificate CN,
MQTT client id, ACL user), ``direction`` and ``board`` (a profile under hardware/profiles/). Optional per row or
as defaults: ``name`` (the gate's label within its site; default the gate id), ``broker`` (``host[:port]`` of
the site broker, as the gate reaches it), ``ssh_user``, ``ssh_port``, ``host_key`` (the gate's SSH host key
fingerprint, ``SHA256:...``, pinned instead of known_hosts), ``root`` (an install prefix), the files installed
on the gate (``broker_ca``, ``trust_list``, ``revocation``, ``signers``, ``anchors``, ``operator_keys``: the
province's operators.json, which turns the gate's signed commands on), ``packages`` (extra Debian packages) and
``config`` (further qrgate.toml settings, e.g. ``camera.source``).

Two formats. TOML::

    [defaults]
    broker = "10.20.0.2:8883"
    signers = ["province-signer.pem"]
    trust_list = "trust-list.cose"

    [[gate]]
    host = "10.20.0.11"
    site = "hn-bx-giapbat"
    gate = "hn-bx-giapbat-g1"
    direction = "in"
    board = "rpi-gate-v1"

CSV: a header naming at least the five columns (the optional ones may be columns too; ``signers`` and
``anchors`` separated by ``;``). Relative file paths are relative to the inventory file.
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .checklist import ProvisionError

REQUIRED = ("host", "site", "gate", "direction", "board")
DIRECTIONS = ("in", "out", "both")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # qrgate.config's device id rule
_BOARD = re.compile(r"[a-z0-9][a-z0-9_-]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}|\[[0-9A-Fa-f:]+\]")
_FILES = ("broker_ca", "trust_list", "revocation", "operator_keys")
_FILE_LISTS = ("signers", "anchors")
# Settings the columns own: an inventory's ``config`` table may not set them behind the columns' back.
COLUMN_OWNED = {("device", "id"), ("device", "site_id"), ("device", "gate"), ("device", "direction"),
                ("mqtt", "host"), ("mqtt", "port"), ("feedback", "board"), ("remote", "operator_keys")}


class InventoryError(ProvisionError):
    """A row or a value of the inventory that cannot be used; the message names the file and row."""


@dataclass(frozen=True)
class GateSpec:
    """Everything the provisioner needs to know about one gate (laptop-side paths for the files)."""

    host: str
    site: str
    gate: str
    direction: str
    board: str
    broker: str = ""
    name: str = ""
    ssh_user: str = ""
    ssh_port: int = 22
    host_key: str = ""  # the gate's SSH host key fingerprint, SHA256:... (instead of known_hosts)
    root: str = ""  # install under this prefix on the target (default: --root, else /)
    broker_ca: str = ""
    trust_list: str = ""
    revocation: str = ""
    signers: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    operator_keys: str = ""  # the province's operators.json; empty: the gate's commands stay off
    packages: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict, compare=False)
    where: str = field(default="", compare=False)  # "inventory.toml, gate 3" for messages

    @property
    def label(self) -> str:
        return self.name or self.gate

    @property
    def broker_host(self) -> str:
        host, _, _ = _split_host_port(self.broker)
        return host

    @property
    def broker_port(self) -> int:
        _, _, port = _split_host_port(self.broker)
        return port

    def validate(self) -> GateSpec:
        where = f"{self.where}: " if self.where else ""
        for name in ("site", "gate"):
            if not _ID.fullmatch(getattr(self, name)):
                raise InventoryError(f"{where}{name} {getattr(self, name)!r} is not a valid id: 1-64 of A-Z a-z 0-9 "
                                     "_ . - starting with a letter or digit (it is a topic level and a certificate CN)")
        if self.direction not in DIRECTIONS:
            raise InventoryError(f"{where}direction {self.direction!r}: one of {', '.join(DIRECTIONS)}")
        if not _BOARD.fullmatch(self.board):
            raise InventoryError(f"{where}board {self.board!r} is not a profile name (hardware/profiles/NAME.toml)")
        if not _HOST.fullmatch(self.host):
            raise InventoryError(f"{where}host {self.host!r} is not a host name or address")
        if not self.broker:
            raise InventoryError(f"{where}no broker: give the site broker's address (broker = \"host[:port]\" in the "
                                 "inventory, or --broker)")
        _split_host_port(self.broker, where)
        if self.root and not self.root.startswith("/"):
            raise InventoryError(f"{where}root {self.root!r} must be an absolute path")
        if not 1 <= self.ssh_port <= 65535:
            raise InventoryError(f"{where}ssh_port {self.ssh_port} is not a TCP port")
        if not 0 < len(self.label) <= 64:
            raise InventoryError(f"{where}name must be 1-64 characters")
        for section, key in _dotted(self.config):
            if (section, key) in COLUMN_OWNED:
                raise InventoryError(f"{where}config {section}.{key} is set by the inventory's columns, not config")
        return self


def _split_host_port(value: str, where: str = "") -> tuple[str, str, int]:
    host, colon, port_text = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not colon:
        return value, "", 8883
    try:
        port = int(port_text)
    except ValueError:
        raise InventoryError(f"{where}broker {value!r}: the port after ':' is not a number") from None
    if not 1 <= port <= 65535:
        raise InventoryError(f"{where}broker {value!r}: port out of range")
    return host, colon, port


def _dotted(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(section, key) for section, table in config.items() if isinstance(table, Mapping) for key in table]


_FIELD_NAMES = {f.name for f in fields(GateSpec)} - {"where"}


def spec_from(values: Mapping[str, Any], *, where: str, base_dir: Path | None = None) -> GateSpec:
    """A validated GateSpec from one merged row (defaults already applied)."""
    unknown = sorted(set(values) - _FIELD_NAMES)
    if unknown:
        raise InventoryError(f"{where}: unknown column(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(_FIELD_NAMES))})")
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        raise InventoryError(f"{where}: missing {', '.join(missing)}")
    converted: dict[str, Any] = {}
    for name, value in values.items():
        if name in _FILES and value:
            converted[name] = _resolve(str(value), base_dir)
        elif name in (*_FILE_LISTS, "packages"):
            items = value.split(";") if isinstance(value, str) else list(value or ())
            items = [str(item).strip() for item in items if str(item).strip()]
            converted[name] = tuple(_resolve(item, base_dir) if name in _FILE_LISTS else item for item in items)
        elif name == "ssh_port":
            try:
                converted[name] = int(value) if value not in ("", None) else 22
            except (TypeError, ValueError):
                raise InventoryError(f"{where}: ssh_port {value!r} is not a number") from None
        elif name == "config":
            if not isinstance(value, Mapping):
                raise InventoryError(f"{where}: config must be a table of qrgate.toml sections")
            converted[name] = value
        else:
            converted[name] = "" if value is None else str(value).strip()
    return GateSpec(where=where, **converted).validate()


def _resolve(path: str, base_dir: Path | None) -> str:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    return str(candidate)


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; ``config`` tables merge section by section; empty values do not override."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if value in (None, "", (), []):
                continue
            if name == "config" and isinstance(value, Mapping):
                config = {section: dict(table) for section, table in merged.get("config", {}).items()}
                for section, table in value.items():
                    if isinstance(table, Mapping):
                        config.setdefault(section, {}).update(table)
                    else:
                        raise InventoryError(f"config.{section} must be a table (e.g. [config.camera])")
                merged["config"] = config
            else:
                merged[name] = value
    return merged


@dataclass(frozen=True)
class Inventory:
    """An inventory file: its defaults and its rows (as raw mappings, merged into GateSpecs on demand)."""

    path: Path
    defaults: Mapping[str, Any]
    rows: tuple[tuple[str, Mapping[str, Any]], ...]  # (where, row)

    def specs(self, *, over_defaults: Mapping[str, Any] | None = None,
              over_rows: Mapping[str, Any] | None = None) -> list[GateSpec]:
        """Every row as a GateSpec: file defaults < ``over_defaults`` < the row < ``over_rows``."""
        specs = [spec_from(merge(self.defaults, over_defaults or {}, row, over_rows or {}), where=where,
                           base_dir=self.path.parent) for where, row in self.rows]
        _unique(specs)
        return specs

    def gate_ids(self) -> frozenset[str]:
        return frozenset(str(row["gate"]) for _, row in self.rows if row.get("gate"))

    def row_for(self, gate: str) -> Mapping[str, Any] | None:
        found = [row for _, row in self.rows if row.get("gate") == gate]
        return found[0] if found else None

    def spec_for(self, gate: str, overrides: Mapping[str, Any]) -> GateSpec:
        """One gate: file defaults < its row (when listed) < ``overrides`` (the command line)."""
        row = self.row_for(gate) or {}
        where = f"{self.path.name}, gate {gate}"
        return spec_from(merge(self.defaults, row, overrides, {"gate": gate}), where=where, base_dir=self.path.parent)


def _unique(specs: Iterable[GateSpec]) -> None:
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.gate in seen:
            raise InventoryError(f"{spec.where}: gate {spec.gate} is also {seen[spec.gate]}")
        seen[spec.gate] = spec.where


def load_inventory(path: str | Path) -> Inventory:
    """Read a TOML (``.toml``) or CSV inventory; rows are checked when they become GateSpecs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InventoryError(f"{path}: not valid TOML: {exc}") from None
        unknown = sorted(set(data) - {"defaults", "gate"})
        if unknown:
            raise InventoryError(f"{path}: unknown table(s) {', '.join(unknown)} (use [defaults] and [[gate]])")
        rows = data.get("gate", [])
        if not isinstance(rows, list):
            raise InventoryError(f"{path}: gate must be an array of tables ([[gate]])")
        return Inventory(path, data.get("defaults", {}),
                         tuple((f"{path.name}, gate {n}", row) for n, row in enumerate(rows, start=1)))
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InventoryError(f"{path}: the header lacks {', '.join(missing)} (need {', '.join(REQUIRED)})")
    csv_rows = []
    for row in reader:
        cleaned = {(key or "").strip(): (value or "").strip() for key, value in row.items() if key}
        if any(cleaned.values()):
            csv_rows.append((f"{path.name}, line {reader.line_num}", cleaned))
    return Inventory(path, {}, tuple(csv_rows))


def with_values(spec: GateSpec, **values: Any) -> GateSpec:
    """A copy of ``spec`` with fields replaced, checked again."""
    return replace(spec, **values).validate()
