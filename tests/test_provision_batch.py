"""``qrgate-provision batch``: three gates from one inventory, two at once; the third Pi is switched off (nothing
listens on its SSH port). The two come up on the broker, the third fails with the reason, the run says so in its
summary table and exits 1. CSV inventories are read the same way."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest

from provision_helpers import (
    SITE,
    Province,
    SiteWorld,
    make_image_venv,
    reach_args,
    stop_daemon,
    traversable,
    write_inventory,
)
from qrgate_provisioning.provision.cli import main
from qrgate_provisioning.provision.device_ca import DeviceCA
from qrgate_provisioning.provision.inventory import load_inventory
from qrgate_tools.broker import free_loopback_port
from sshd_helpers import Sshd

pytestmark = pytest.mark.slow


def test_a_batch_of_three_with_one_unreachable(tmp_path: Path, sshd: Sshd, software,
                                               province: Province) -> None:
    wheel, deps = software
    traversable(tmp_path)
    ca = DeviceCA.create(tmp_path / "device-ca", "qrgate test devices")
    world = SiteWorld(tmp_path / "broker", ca)
    world.broker.start()
    roots = {gate: tmp_path / gate for gate in ("batch-a", "batch-b", "batch-c")}
    for gate in ("batch-a", "batch-b"):
        make_image_venv(roots[gate], deps)
    rows: list[dict[str, object]] = [
        dict(host="127.0.0.1", site=SITE, gate="batch-a", direction="in", board="rpi-gate-v1"),
        dict(host="127.0.0.1", site=SITE, gate="batch-b", direction="out", board="rpi-traffic-hat"),
        dict(host="127.0.0.1", site=SITE, gate="batch-c", direction="in", board="rpi-gate-v1",
             ssh_port=free_loopback_port()),  # switched off: nothing listens there
    ]
    for row in rows:
        row["root"] = str(roots[str(row["gate"])])  # three gates on one machine: a root prefix each
    inventory = write_inventory(tmp_path / "inventory.toml", province=province, world=world, gates=rows)
    out = io.StringIO()
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(out):
            status = main(["batch", str(inventory), "--concurrency", "2", "--plain",
                           *reach_args(sshd, tmp_path / "device-ca", world), "--wheelhouse", str(wheel.parent),
                           "--allow-unsynced-clock"])
    finally:
        for root in roots.values():
            stop_daemon(root)
        world.broker.stop()
    seconds = time.monotonic() - started
    text = out.getvalue()
    print(text)
    print(f"batch of 3 (2 provisioned, 2 at once): {seconds:.1f} s")
    assert status == 1
    summary = {line.split()[0]: line for line in text.splitlines() if line.startswith("batch-")}
    assert summary["batch-a"].split()[2] == "ok" and summary["batch-b"].split()[2] == "ok"
    assert summary["batch-c"].split()[2] == "FAILED" and "cannot reach" in summary["batch-c"]
    assert "2 of 3 gates ok, 1 failed" in text
    assert ca.active("batch-a") is not None and ca.active("batch-b") is not None and ca.active("batch-c") is None
    assert 'board = "' in (roots["batch-b"] / "etc/qrgate/qrgate.toml").read_text()
    assert "rpi-traffic-hat.toml" in (roots["batch-b"] / "etc/qrgate/qrgate.toml").read_text()


def test_a_csv_inventory_gives_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "gates.csv"
    path.write_text("host,site,gate,direction,board,broker,signers\n"
                    "10.0.0.11,market-1,gate-1,in,rpi-gate-v1,10.0.0.2:8883,a.pem;b.pem\n"
                    "10.0.0.12,market-1,gate-2,out,rpi-traffic-hat,10.0.0.2,\n")
    specs = load_inventory(path).specs(over_defaults={"signers": ["/keys/c.pem"]})
    assert [(s.gate, s.host, s.direction, s.board, s.broker_port) for s in specs] == [
        ("gate-1", "10.0.0.11", "in", "rpi-gate-v1", 8883), ("gate-2", "10.0.0.12", "out", "rpi-traffic-hat", 8883)]
    assert specs[0].signers == (str(tmp_path / "a.pem"), str(tmp_path / "b.pem"))
    assert specs[1].signers == ("/keys/c.pem",)  # the command line's default, where the row has none
