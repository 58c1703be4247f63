"""Where everything goes on the gate, under a root prefix.

Every target path is ``root`` + the path a gate uses (``/etc/qrgate``, ``/opt/qrgate``, ``/var/lib/qrgate``,
``/usr/share/qrgate``, ``/etc/systemd/system``), so ``--root /srv/staging`` or a test's temp directory never
touches the machine's own /etc. With the default root ``/`` the paths are the gate's own. Users, groups and
Debian packages are the target system's, whatever the root: the daemon has to run as that user.

With a root other than ``/`` the files that name paths (the configuration, the unit) name the prefixed ones,
so the installed daemon reads and writes only under the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

SERVICE_USER = "qrgate"
SERVICE_GROUPS = ("gpio", "video")  # the unit's SupplementaryGroups=
UNIT_NAME = "qrgate.service"

# The gate's own paths (root "/"); everything else derives from them.
ETC = "/etc/qrgate"
OPT = "/opt/qrgate"
VAR = "/var/lib/qrgate"
SHARE = "/usr/share/qrgate"
SYSTEMD = "/etc/systemd/system"
# Only the provisioner's: the uploaded wheelhouse (kept, so a re-run sends only what changed) and, where
# systemd is not running, the pid file and log of the daemon it started itself.
CACHE = "/var/cache/qrgate-provision"
RUN = "/run/qrgate-provision"

_UNIT_PATHS = re.compile(r"(?<![\w/])(/etc/qrgate|/opt/qrgate|/var/lib/qrgate|/usr/share/qrgate)(?=[/\s]|$)")


@dataclass(frozen=True, slots=True)
class Layout:
    """The target's paths under ``root``."""

    root: str = "/"

    def path(self, gate_path: str) -> str:
        """``gate_path`` (absolute, as on a gate) under the root prefix."""
        if not gate_path.startswith("/"):
            raise ValueError(f"not an absolute path: {gate_path!r}")
        if self.root in ("", "/"):
            return gate_path
        return str(PurePosixPath(self.root) / gate_path.lstrip("/"))

    @property
    def prefixed(self) -> bool:
        return self.root not in ("", "/")

    # --- configuration and identity ---
    @property
    def etc(self) -> str:
        return self.path(ETC)

    @property
    def config(self) -> str:
        return self.path(f"{ETC}/qrgate.toml")

    @property
    def pki(self) -> str:
        return self.path(f"{ETC}/pki")

    @property
    def key(self) -> str:
        return self.path(f"{ETC}/pki/device.key")

    @property
    def cert(self) -> str:
        return self.path(f"{ETC}/pki/device.pem")

    @property
    def broker_ca(self) -> str:
        """The CA the gate verifies its broker with (mqtt.ca_file)."""
        return self.path(f"{ETC}/pki/ca.pem")

    @property
    def device_chain(self) -> str:
        """The device CA's chain, for reference (the broker verifies the gate with it)."""
        return self.path(f"{ETC}/pki/device-ca.pem")

    @property
    def trust(self) -> str:
        return self.path(f"{ETC}/trust")

    @property
    def signers(self) -> str:
        return self.path(f"{ETC}/trust-signers")

    @property
    def operator_keys(self) -> str:
        """The province's operator public keys, whose signed commands the gate obeys (remote.operator_keys)."""
        return self.path(f"{ETC}/operators.json")

    # --- state ---
    @property
    def var(self) -> str:
        return self.path(VAR)

    @property
    def state_dir(self) -> str:
        return self.path(f"{VAR}/trust")

    @property
    def drop_dir(self) -> str:
        return self.path(f"{VAR}/trust-drop")

    @property
    def outbox(self) -> str:
        return self.path(f"{VAR}/outbox.sqlite")

    @property
    def command_nonces(self) -> str:
        """The accepted commands' nonces (remote.nonces_path), kept across restarts so a replay stays refused."""
        return self.path(f"{VAR}/command-nonces.sqlite")

    # --- software ---
    @property
    def opt(self) -> str:
        return self.path(OPT)

    @property
    def venv(self) -> str:
        return self.path(f"{OPT}/venv")

    @property
    def venv_python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def qrgate(self) -> str:
        return f"{self.venv}/bin/qrgate"

    @property
    def wheel_stamp(self) -> str:
        """Which wheel the venv's qrgate was installed from (name and SHA-256): the idempotency check."""
        return f"{self.venv}/.qrgate-wheel"

    @property
    def profiles(self) -> str:
        return self.path(f"{SHARE}/hardware/profiles")

    def profile(self, board: str) -> str:
        return f"{self.profiles}/{board}.toml"

    @property
    def wheelhouse(self) -> str:
        return self.path(f"{CACHE}/wheelhouse")

    # --- the unit ---
    @property
    def unit(self) -> str:
        return self.path(f"{SYSTEMD}/{UNIT_NAME}")

    @property
    def unit_wants(self) -> str:
        return self.path(f"{SYSTEMD}/multi-user.target.wants/{UNIT_NAME}")

    @property
    def run_dir(self) -> str:
        return self.path(RUN)

    @property
    def pid_file(self) -> str:
        return f"{self.run_dir}/qrgate.pid"

    @property
    def daemon_log(self) -> str:
        return f"{self.run_dir}/qrgate.log"

    def unit_text(self, original: str) -> str:
        """The unit as installed: the original, with the gate's paths prefixed when the root is not ``/``."""
        if not self.prefixed:
            return original
        return _UNIT_PATHS.sub(lambda match: self.path(match.group(1)), original)
