"""A throw-away PostgreSQL server for the tests: one per test session on a Unix socket in a temp dir, and a fresh
database per test that needs one (``CREATE DATABASE`` is fast; a server start is not)."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qrgate_tools.broker import free_loopback_port

_database_numbers = itertools.count(1)


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private server; yields the DSN of its ``postgres`` database (skips if none can run here)."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg")
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    run_as: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="qrgate-pg-"))  # not pytest's tmp: its root-only mode keeps others out
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(directory, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_loopback_port()
    data = directory / "data"
    subprocess.run([*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "qrgate", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-l", str(directory / "log"), "-w", "start", "-o",
                    f"-k {directory} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=200"],
                   check=True, capture_output=True)
    try:
        yield f"host={directory} port={port} user=qrgate dbname=postgres"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(server_dsn: str) -> str:
    """A new empty database on the server; its DSN."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(server_dsn, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_dsn.replace("dbname=postgres", f"dbname={name}")
