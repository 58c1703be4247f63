"""Reading the device configuration: TOML text to a validated GateConfig (config.py), with every problem reported
at once as ``file:line: dotted.key: message``, and the defaults rendered back as commented TOML.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .config import GateConfig
from .errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map dotted key paths to the 1-based line where they are written.

    tomllib gives no positions, and a message a technician can act on needs the line. This
    understands the TOML a person writes in this file: [table] headers, [[array]] headers and
    ``key = value`` lines with bare, quoted or dotted keys; anything else just has no line.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assignment = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        match = header.match(line)
        if match:
            table = tuple(part.strip().strip("\"'") for part in match.group(1).split("."))
            lines.setdefault(table, number)
            continue
        match = assignment.match(line)
        if match:
            key = tuple(part.strip().strip("\"'") for part in match.group(1).split("."))
            lines.setdefault(table + key, number)
    return lines


def _locate(loc: tuple[str | int, ...], key_lines: dict[tuple[str, ...], int]) -> int | None:
    path = tuple(str(part) for part in loc)
    while path:
        if path in key_lines:
            return key_lines[path]
        path = path[:-1]
    return None


def parse_config(text: str, source: str = "<config>", *, demo: bool = False) -> GateConfig:
    """Validate TOML text; raise ConfigError listing every problem as ``source:line: key: message``.

    A real gate's file (``device.mode = "gate"``, the default, and not ``demo``) must also name its device id,
    site and camera, and the camera may not be the synthetic scene: an empty or truncated file would otherwise
    run a demo gate under the built-in identity and publish its test-card events to the province.
    """
    data, config, key_lines = validate_toml(GateConfig, text, source,
                                            unknown_key_hint="see `qrgate check-config --print-defaults`")
    if not demo and config.device.mode == "gate":
        problems = _unnamed_in_a_gate(data, config, key_lines, source)
        if problems:
            raise ConfigError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(problems))
    return config


def validate_toml(model: type[Model], text: str, source: str, *,
                  unknown_key_hint: str) -> tuple[dict[str, object], Model, dict[tuple[str, ...], int]]:
    """TOML text validated as ``model``: the data, the model and where each key is written.

    Raises ConfigError listing every problem at once as ``source:line: dotted.key: message``. Shared with the
    province's own service file (qrgate_provisioning.province.settings), so both read the same way.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    key_lines = _key_lines(text)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
            dotted = ".".join(str(part) for part in loc) or "(top level)"
            line = _locate(loc, key_lines)
            where = f"{source}:{line}" if line else source
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = f"unknown key (check the spelling; {unknown_key_hint})"
            problems.append(f"{where}: {dotted}: {message}")
        raise ConfigError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(problems)) from None
    return data, config, key_lines


def _unnamed_in_a_gate(data: dict[str, object], config: GateConfig, key_lines: dict[tuple[str, ...], int],
                       source: str) -> list[str]:
    """What a real gate's file leaves to the built-in demo values."""
    problems = []
    hint = '(or set device.mode = "demo" for a bench-top gate)'
    for section, key, what in (("device", "id", "its device id"), ("device", "site_id", "its site"),
                               ("camera", "source", "its camera")):
        table = data.get(section)
        if not isinstance(table, dict) or key not in table:
            problems.append(f"{source}: {section}.{key}: missing: a gate's config must name {what} {hint}")
    if config.camera.source == "synthetic" and not problems:
        line = key_lines.get(("camera", "source"))
        where = f"{source}:{line}" if line else source
        problems.append(f'{where}: camera.source: "synthetic" is the demo scene, not a camera {hint}')
    return problems


def load_config(path: str | Path, *, demo: bool = False) -> GateConfig:
    """The configuration in ``path`` (see ``parse_config``; ``demo`` allows a demo gate's file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, str(path), demo=demo)


def render_defaults() -> str:
    """The default configuration as commented TOML: every field with its description."""
    out: list[str] = ["# qrgate configuration: every key with its default and what it means.", ""]

    def emit(model: type[BaseModel], instance: BaseModel, table: str) -> None:
        nested: list[tuple[str, type[BaseModel], BaseModel]] = []
        out.append(f"[{table}]")
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                nested.append((name, type(value), value))
                continue
            out.append(f"# {field.description}")
            out.append(f"{'# ' if value is None else ''}{name} = {_toml_value(value)}")
        out.append("")
        for name, sub_model, sub_value in nested:
            emit(sub_model, sub_value, f"{table}.{name}")

    defaults = GateConfig()
    for name in GateConfig.model_fields:
        section = getattr(defaults, name)
        emit(type(section), section, name)
    return "\n".join(out)


def _toml_value(value: object) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no TOML rendering for {type(value).__name__}")
