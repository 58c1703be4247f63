"""Fixtures shared by the test modules: a private Mosquitto broker, an open outbox and a small real
file system that fills up. pytest finds them here; the test modules take them by name and import
only the helper functions they call (from mqtt_helpers.py and friends)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_helpers import fresh_database, postgres_server
from provision_helpers import Province, build_wheel, dependency_site, make_province, traversable
from qrgate.outbox import Outbox
from qrgate_tools.broker import MosquittoBroker
from sshd_helpers import Sshd


@pytest.fixture(name="broker")
def broker_fixture(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A running private broker on a free loopback port."""
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture(name="outbox")
def outbox_fixture(tmp_path: Path) -> Iterator[Outbox]:
    """An open outbox in the test's temp dir."""
    with Outbox(tmp_path / "outbox.sqlite") as store:
        yield store


@pytest.fixture(name="small_filesystem")
def small_filesystem_fixture(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs that fills up as an SD card would (needs CAP_SYS_ADMIN; skips otherwise)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point)],
                             check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


# --- the provisioning tests' session fixtures (helpers in provision_helpers.py, sshd_helpers.py) ---------


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if os.geteuid() != 0:
        pytest.skip("the provisioning tests run sshd and log in as root: run them as root")
    workdir = tmp_path_factory.mktemp("sshd")
    traversable(workdir)  # sshd reads the authorised keys as the user logging in (an unprivileged one too)
    with Sshd(workdir) as running:
        yield running


@pytest.fixture(scope="session")
def software(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the qrgate wheel built from this checkout, the dependency site standing in for apt's packages)."""
    workdir = tmp_path_factory.mktemp("software")
    traversable(workdir)
    return build_wheel(workdir / "wheelhouse"), dependency_site(workdir)


@pytest.fixture(scope="session")
def province(tmp_path_factory: pytest.TempPathFactory) -> Province:
    return make_province(tmp_path_factory.mktemp("province"))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A private PostgreSQL server for the whole session: the DSN of its ``postgres`` database."""
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
def province_dsn(postgres_dsn: str) -> str:
    """A new empty database for one test, on the session's server."""
    return fresh_database(postgres_dsn)
