"""``qrgate-provision`` when things go wrong: the link cut mid-run (then a re-run finishes, with one identity), a
wrong or unknown host key, a full card, a gate without its camera, a login user that is not root.

Each test has its own site (device CA, broker) and target root; see provision_helpers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision_helpers import (
    DEMO_CONFIG,
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
from qrgate_provisioning.provision.checklist import Checklist
from qrgate_provisioning.provision.cli import main
from qrgate_provisioning.provision.context import Observer, RunOptions
from qrgate_provisioning.provision.device_ca import DeviceCA
from qrgate_provisioning.provision.inventory import load_inventory
from qrgate_provisioning.provision.provisioner import Shared, provision_gate
from qrgate_provisioning.provision.transport import Remote, SshOptions
from qrgate_provisioning.provision.verify import BirthWatcher
from qrgate_provisioning.provision.wheels import load_wheelhouse
from sshd_helpers import Sshd, make_key

pytestmark = pytest.mark.slow
GATE = "gate-f"
UNPRIVILEGED = "qrgate-tech"  # a login user without sudo (this machine has none)


@dataclass
class Site:
    workdir: Path
    ca_dir: Path
    ca: DeviceCA
    world: SiteWorld
    root: Path
    inventory: Path
    reach: list[str]
    install: list[str]

    def args(self, *extra: str) -> list[str]:
        return ["gate", "127.0.0.1", "--gate", GATE, "--inventory", str(self.inventory), "--root", str(self.root),
                *self.reach, *self.install, *extra]

    def run(self, *extra: str, reach: list[str] | None = None) -> tuple[int, str]:
        out = io.StringIO()
        args = self.args(*extra) if reach is None else ["gate", "127.0.0.1", "--gate", GATE, "--inventory",
                                                       str(self.inventory), "--root", str(self.root), *reach,
                                                       *self.install, *extra]
        with contextlib.redirect_stdout(out):
            status = main(args)
        print(out.getvalue())
        return status, out.getvalue()


@pytest.fixture
def site(tmp_path: Path, sshd: Sshd, software, province: Province) -> Iterator[Site]:
    wheel, deps = software
    traversable(tmp_path)
    ca = DeviceCA.create(tmp_path / "device-ca", "qrgate test devices")
    world = SiteWorld(tmp_path / "broker", ca)
    world.broker.start()
    root = tmp_path / "card"
    make_image_venv(root, deps)
    inventory = write_inventory(tmp_path / "inventory.toml", province=province, world=world, gates=[
        dict(host="127.0.0.1", site=SITE, gate=GATE, direction="in", board="rpi-gate-v1")])
    found = Site(tmp_path, tmp_path / "device-ca", ca, world, root, inventory, reach_args(sshd, tmp_path / "device-ca",
                                                                                         world), install_args(wheel))
    try:
        yield found
    finally:
        stop_daemon(root)
        world.broker.stop()


def owned_files(root: Path) -> list[Path]:
    """What the provisioner would have written under ``root`` (the stand-in venv aside)."""
    return [p for p in root.rglob("*") if p.is_file() and "opt/qrgate/venv" not in str(p)]


def test_a_link_cut_mid_run_leaves_a_state_a_rerun_finishes_with_one_identity(
        site: Site, sshd: Sshd, software: tuple[Path, Path]) -> None:
    """The cut comes after the gate made its key (device.key.new) and just before the CA signs: the CA issues, the
    certificate cannot be sent. The re-run gets the same certificate back for the same key (no second one)."""
    wheel, _ = software
    cuts: list[int] = []

    async def cut(step: str, remote: Remote) -> None:
        if step == "identity sign" and not cuts:
            cuts.append(sshd.cut_connections())  # kill the connection's sshd: the link drops
            await asyncio.sleep(0.3)

    spec = load_inventory(site.inventory).specs(over_defaults={"root": str(site.root), "ssh_port": sshd.port})[0]
    options = RunOptions(allow_unsynced_clock=True, technician="tester", hook=cut, birth_timeout_s=30,
                         observer=Observer(str(site.world.observer.cert), str(site.world.observer.key),
                                           str(site.world.pki.ca_file)))
    ssh = SshOptions(user="root", port=sshd.port, key_files=(str(sshd.client_key.private),),
                     known_hosts=str(sshd.known_hosts))

    async def first_run() -> Checklist:
        shared = Shared(ca=site.ca, ca_lock=asyncio.Lock(), wheelhouse=load_wheelhouse(wheel=wheel),
                        inventory_ids=frozenset({GATE}),
                        watchers={site.world.address: BirthWatcher(options.observer, site.world.address)})
        return await provision_gate(spec, ssh, options, shared)

    checklist = asyncio.run(first_run())
    print(checklist.render())
    assert cuts and cuts[0] >= 1
    assert not checklist.ok and [item.name for item in checklist.failures] == ["link"]
    assert "run the same command again" in checklist.failures[0].detail
    pki = site.root / "etc" / "qrgate" / "pki"
    assert (pki / "device.key.new").exists() and not (pki / "device.key").exists()
    assert not list(pki.glob("*.provision-tmp"))
    issued = site.ca.records(GATE)
    assert len(issued) == 1  # the CA signed before the link was found dropped

    status, out = site.run()  # the technician runs the same command again
    assert status == 0, out
    assert "certificate" in out and "issued before the link dropped" in out
    assert site.ca.records(GATE) == issued  # no second identity
    assert (pki / "device.key").exists() and not (pki / "device.key.new").exists()
    assert issued[0].cert_pem == (pki / "device.pem").read_bytes()


def test_a_changed_host_key_is_refused_with_a_clear_message(
        site: Site, sshd: Sshd, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other_host_key")
    kind, data = other.public_line().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {data}\n")
    reach = [arg if arg != str(sshd.known_hosts) else str(known) for arg in site.reach]
    status, out = site.run(reach=reach)
    assert status == 1
    assert "host key CHANGED" in out and sshd.host_key_fingerprint in out and "refused" in out
    assert owned_files(site.root) == []  # nothing was touched


def test_a_wrong_pinned_fingerprint_and_an_unknown_host_are_refused(
        site: Site, sshd: Sshd, tmp_path: Path) -> None:
    status, out = site.run("--host-key-fingerprint", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert status == 1 and "not the SHA256:AAAA" in out and "--host-key-fingerprint" in out
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    reach = [arg if arg != str(sshd.known_hosts) else str(empty) for arg in site.reach]
    status, out = site.run(reach=reach)
    assert status == 1 and "is not in" in out and "--accept-new-host-key" in out
    assert sshd.host_key_fingerprint in out  # what to compare with the device
    assert owned_files(site.root) == []
    status, out = site.run("--check", "--accept-new-host-key", reach=reach)  # trust on first use, asked for
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in empty.read_text()
    assert "would" in out and owned_files(site.root) == []


def test_a_full_card_stops_the_run_before_anything_changes(site: Site, tmp_path: Path) -> None:
    card = tmp_path / "small-card"
    card.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(card)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        site.root = card
        status, out = site.run()
        assert status == 1
        assert "FAILED  free space" in out and "need at least" in out and "16 MB" in out
        assert "nothing was changed" in out
        assert list(card.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(card)], check=False)


def test_a_gate_without_its_camera_is_reported_by_the_check(site: Site, province: Province) -> None:
    real_camera = {section: dict(values) for section, values in DEMO_CONFIG.items()}
    real_camera["camera"] = {"source": "picamera2"}
    real_camera["device"] = {"mode": "gate"}
    write_inventory(site.inventory, province=province, world=site.world, config=real_camera, gates=[
        dict(host="127.0.0.1", site=SITE, gate=GATE, direction="in", board="rpi-gate-v1")])
    status, out = site.run("--check", "--no-apt")
    assert status == 1
    camera = next(line for line in out.splitlines() if " camera device " in line)
    assert camera.startswith("FAILED") and "no /dev/video* or /dev/media*" in camera
    assert "python3-picamera2" in out  # the Pi camera's package is wanted too
    assert owned_files(site.root) == []


def test_a_login_user_without_root_or_sudo_is_refused(site: Site) -> None:
    if subprocess.run(["id", UNPRIVILEGED], capture_output=True, check=False).returncode != 0:
        created = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", UNPRIVILEGED],
                                 capture_output=True, text=True, check=False)
        if created.returncode != 0:
            pytest.skip(f"cannot create a test user: {created.stderr.strip()}")
    subprocess.run(["usermod", "-p", "*", UNPRIVILEGED], check=True)  # no password, not locked: keys only
    status, out = site.run("--user", UNPRIVILEGED)
    assert status == 1
    assert f"{UNPRIVILEGED}@127.0.0.1 is not root and `sudo -n true` failed" in out
    assert owned_files(site.root) == []
