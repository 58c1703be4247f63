"""The checks every rendered broker configuration passes first (brokerconf.py): ids, host names, ports, paths, the
user, persistence limits, and one owner per certificate name. A value that would render a broken or unsafe
Mosquitto file is a ConfigError naming the field, before any file is written."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from qrgate.errors import ConfigError

if TYPE_CHECKING:
    from .brokerconf import ProvincialBroker, SiteBroker

# Device, site and role ids become MQTT topic levels, ACL usernames (certificate CNs) and client
# ids: the same rule as the gate's own config (qrgate.config), so no '/', '+', '#', space or '%'.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Mosquitto splits option values at spaces, so a path or host with whitespace would be misread.
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _check_id(what: str, value: str) -> None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid id: 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit "
            "(it becomes an MQTT topic level, a certificate CN and a client id)"
        )


def _check_host(what: str, value: str) -> None:
    if not isinstance(value, str) or not _HOST.fullmatch(value):
        raise ConfigError(f"{what} {value!r} is not a host name or IPv4 address")


def _check_port(what: str, value: int) -> None:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{what} {value!r} is not a TCP port (1-65535)")


def _check_path(what: str, value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ConfigError(
            f"{what} {value!r} must be an absolute path without spaces (mosquitto splits values at spaces)"
        )


def _check_user(value: str) -> None:
    if not isinstance(value, str) or not _USER.fullmatch(value):
        raise ConfigError(f"run_as_user {value!r} is not a Unix user name")


def _check_files_and_user(broker: SiteBroker | ProvincialBroker) -> None:
    for name in ("acl_file", "persistence_dir", "crl_file"):
        _check_path(name, getattr(broker, name))
    if broker.log_file is not None:
        _check_path("log_file", broker.log_file)
    _check_user(broker.run_as_user)


def _check_persistence(autosave: int, max_queued_messages: int, *, what: str = "autosave_changes") -> None:
    if autosave < 1:
        raise ConfigError(f"{what} must be at least 1, got {autosave}")
    if max_queued_messages < 1:
        raise ConfigError(f"max_queued_messages must be at least 1, got {max_queued_messages}")


def _claim(owner: dict[str, str], name: str, what: str) -> None:
    if name in owner:
        raise ConfigError(f"{name!r} is both {owner[name]} and {what}: one certificate CN cannot be two clients")
    owner[name] = what
