"""The provisioning tests' world: a real sshd (sshd_helpers.py), a target root per gate, the site broker with the
generated mTLS + ACL + CRL configuration, the site's device CA, the province's signed lists, and an inventory.

The target is this machine, reached over SSH on loopback; each gate's files go under its own root prefix (a temp
directory), so nothing touches the machine's /etc. What a Raspberry Pi image would already hold is stood in for:

- the venv: /opt/qrgate/venv under the root is made here (``--system-site-packages``, as the image stage makes
  it), and a .pth file in it points at this checkout's dev venv packages minus qrgate itself, the way apt's
  python3-* packages appear in a gate's venv. The provisioner then installs the qrgate wheel into it for real
  (pip, --no-index, from the wheelhouse it copies over). A real wheelhouse of every dependency would be
  ~100 MB from PyPI and a minute of pip per gate; firmware/image/check.sh proves that path under qemu.
- the hardware: the gates are demo gates (``device.mode = "demo"``, the synthetic camera at 10 fps, mock pins,
  no relay); the camera check looks for real device nodes when the inventory asks for a real camera.
- the clock: this machine's is not NTP-synchronised, so runs pass ``--allow-unsynced-clock`` (the checklist
  says so on the clock lines).
- the service user: the provisioner creates the system user ``qrgate`` (and groups gpio, video) on this machine,
  as it would on a Pi; users are the target system's whatever the root prefix.

The daemon the provisioner starts in the background (no systemd here) runs as ``qrgate``, so the temp
directories' parents are made traversable (o+x) for it.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from faults import TestPki
from qrgate.passes.revocation import HashType
from qrgate_provisioning.brokerconf import SiteBroker, TlsFiles, write_site_broker
from qrgate_provisioning.keys import new_issuer_key, trust_entry, trust_file
from qrgate_provisioning.provision.device_ca import DeviceCA
from qrgate_provisioning.trustlist import (
    build_revocation_snapshot,
    build_trust_list,
    entries_from_paths,
    new_list_signer,
    public_pem,
)
from qrgate_tools.broker import MosquittoBroker, free_loopback_port
from sshd_helpers import Sshd

REPO = Path(__file__).resolve().parents[1]
SITE = "market-1"
OBSERVER = "technician-laptop"  # the laptop's site-reader CN
DEMO_CONFIG = {
    "device": {"mode": "demo"},
    "camera": {"source": "synthetic", "fps": 10.0},
    "decoder": {"workers": 1},
    "feedback": {"mock_pins": True, "relay": False},
    # The synthetic scene shows passes, so the gate makes check-ins; with no consumer here to acknowledge them
    # end to end they would stay pending, and decommission waits for pending events. The site broker's PUBACK
    # is the acknowledgement in these tests.
    "mqtt": {"end_to_end_ack": False},
}


def traversable(path: Path) -> None:
    """Let the service user reach ``path`` (pytest makes its base directories 0700)."""
    for part in [path, *path.parents]:
        if part == Path("/tmp") or part == part.parent:
            break
        mode = part.stat().st_mode
        if not mode & 0o001:
            os.chmod(part, (mode & 0o7777) | 0o011)


def dependency_site(workdir: Path) -> Path:
    """A directory of links to the dev venv's packages except qrgate: what apt would give a gate's venv."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()))
    deps = workdir / "deps-site"
    deps.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("qrgate", "__editable__", "_qrgate", "__pycache__")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    return deps


def make_image_venv(root: Path, deps: Path) -> None:
    """/opt/qrgate/venv under ``root`` as the image stage leaves it, the apt packages standing in as ``deps``."""
    venv = root / "opt" / "qrgate" / "venv"
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "gate-apt-packages.pth").write_text(f"{deps}\n")


def build_wheel(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)], check=True,
                   capture_output=True)
    return next(out.glob("qrgate-*.whl"))


@dataclass
class Province:
    """The province's side: a list signer, its public key, a signed trust list and revocation snapshot."""

    signer_pem: Path
    trust_list: Path
    revocation: Path
    anchors: Path


def make_province(directory: Path) -> Province:
    directory.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    issuer = new_issuer_key("VN-HN", "EdDSA")
    anchors = directory / "issuers.json"
    anchors.write_text(trust_file([trust_entry(issuer)]))
    signer = new_list_signer()
    signer_pem = directory / "province-signer.pem"
    signer_pem.write_bytes(public_pem(signer))
    trust_list = directory / "trust-list.cose"
    trust_list.write_bytes(build_trust_list(signer, entries_from_paths([anchors]), version=3, issued_at=now - 60,
                                            expires_at=now + 30 * 86400))
    revocation = directory / "revocation.cose"
    revocation.write_bytes(build_revocation_snapshot(signer, {HashType.QRGATE_PASS_ID: [b"\x01" * 16]}, version=2,
                                                     issued_at=now - 60, expires_at=now + 30 * 86400))
    return Province(signer_pem, trust_list, revocation, anchors)


class SiteWorld:
    """The site broker (rendered by brokerconf, run by mosquitto) trusting the device CA for gates and the test
    PKI for its own certificate and the laptop's reader certificate; one CRL per CA in its crlfile."""

    def __init__(self, workdir: Path, ca: DeviceCA) -> None:
        self.workdir = workdir
        self.ca = ca
        self.pki = TestPki(workdir / "pki")
        self.server = self.pki.server("site-server")
        self.observer = self.pki.client(OBSERVER)
        bridge = self.pki.client(f"site-{SITE}")
        self.cafile = workdir / "clients-ca.pem"
        self.cafile.write_bytes(ca.chain_pem + self.pki.ca_file.read_bytes())
        self.device_crl = workdir / "device-ca.crl"  # what the provisioner writes (--crl-out)
        self.crlfile = workdir / "crl.pem"
        ca.write_crl(self.device_crl)
        self.combine_crls()
        self.params = SiteBroker(
            site_id=SITE, province_host="127.0.0.1", province_port=free_loopback_port(),
            listener_tls=TlsFiles(str(self.cafile), str(self.server.cert), str(self.server.key)),
            bridge_tls=TlsFiles(str(self.pki.ca_file), str(bridge.cert), str(bridge.key)),
            port=free_loopback_port(), bind_address="127.0.0.1", acl_file=str(workdir / "qrgate.acl"),
            persistence_dir=str(workdir), log_file=str(workdir / "mosquitto.log"), run_as_user=getpass.getuser(),
            readers=(OBSERVER,), crl_file=str(self.crlfile),
        )
        rendered = write_site_broker(self.params, workdir)
        self.broker = MosquittoBroker.from_config_file(rendered.config_file, port=self.params.port,
                                                       log_path=workdir / "mosquitto.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.params.port}"

    def combine_crls(self) -> None:
        self.crlfile.write_bytes(self.device_crl.read_bytes() + self.pki.crl_file.read_bytes())

    def restart(self) -> None:
        """Pick up a new CRL (a restart also cuts a revoked gate's open connection)."""
        self.combine_crls()
        self.broker.stop()
        self.broker.start()

    def observer_args(self) -> list[str]:
        return ["--observer-cert", str(self.observer.cert), "--observer-key", str(self.observer.key),
                "--observer-ca", str(self.pki.ca_file)]


def write_inventory(path: Path, *, province: Province, world: SiteWorld, gates: list[dict[str, object]],
                    config: dict[str, dict[str, object]] | None = None) -> Path:
    """A TOML inventory: defaults (broker, files, the demo gate's settings) and one [[gate]] per row."""
    lines = ["[defaults]", f'broker = "{world.address}"', f'broker_ca = "{world.pki.ca_file}"',
             f'signers = ["{province.signer_pem}"]', f'anchors = ["{province.anchors}"]',
             f'trust_list = "{province.trust_list}"', f'revocation = "{province.revocation}"', 'ssh_user = "root"']
    for section, values in (config or DEMO_CONFIG).items():
        lines.append(f"[defaults.config.{section}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    for gate in gates:
        lines.append("[[gate]]")
        lines += [f"{key} = {_toml(value)}" for key, value in gate.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return f'"{value}"'


def stop_daemon(root: Path) -> None:
    """Stop the daemon the provisioner started under ``root`` (no systemd here), if it still runs."""
    pid_file = root / "run" / "qrgate-provision" / "qrgate.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


# ---- fixtures (imported by the test modules) ------------------------------------------------------------------


def reach_args(sshd: Sshd, ca_dir: Path, world: SiteWorld) -> list[str]:
    """What every run of the tests gives: the CA, the SSH key and known_hosts, the laptop's reader credential."""
    return ["--ca", str(ca_dir), "-i", str(sshd.client_key.private), "--known-hosts", str(sshd.known_hosts),
            "--ssh-port", str(sshd.port), "--technician", "tester", "--birth-timeout", "30", *world.observer_args()]


def install_args(wheel: Path) -> list[str]:
    """What gate, replace and batch runs add: the software, and this machine's unsynchronised clock allowed."""
    return ["--wheel", str(wheel), "--allow-unsynced-clock"]
