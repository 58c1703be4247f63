"""A private PostgreSQL server in a temporary directory, for the tests and the province's benchmark.

``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``), a Unix
socket in the directory and no TCP listener, trust authentication for the one role ``qrgate``: nothing of the
machine's own PostgreSQL (its port, its data, its configuration) is touched. As root, the server runs as the
``postgres`` account (PostgreSQL refuses to run as root). ``fsync`` off suits tests (a crash loses a test
database, nothing else); the benchmark keeps it on, as production does, because the consumer's acknowledgements
rely on durable commits.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from qrgate.errors import QrgateError

from .broker import free_loopback_port

_database_numbers = itertools.count(1)


class PostgresUnavailable(QrgateError):
    """No PostgreSQL server can run here (binaries missing, psycopg missing, root without a postgres account)."""


def postgres_bin(name: str) -> str | None:
    """Path of a PostgreSQL server program: on PATH, else the newest under /usr/lib/postgresql."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


class PostgresServer:
    """One private server; ``start()`` returns the DSN of its ``postgres`` database, ``stop()`` removes it all.

    ``options`` are extra ``-c name=value`` server settings (e.g. ``{"shared_buffers": "256MB"}``)."""

    def __init__(self, *, fsync: bool = False, max_connections: int = 200,
                 options: dict[str, str] | None = None) -> None:
        try:
            import psycopg  # noqa: F401  (what every user of the server connects with)
        except ImportError as exc:
            raise PostgresUnavailable("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from exc
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed "
                                      "(apt-get install postgresql)")
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self._run_as: list[str] = []
        self._account: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                self._account = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server "
                                          "as") from None
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._settings = {"fsync": "on" if fsync else "off", "max_connections": str(max_connections),
                          **(options or {})}
        self.directory: Path | None = None
        self.dsn: str | None = None

    def start(self) -> str:
        # Not pytest's tmp: its root-only mode would keep the postgres account out.
        directory = self.directory = Path(tempfile.mkdtemp(prefix="qrgate-pg-"))
        if self._account is not None:
            os.chown(directory, self._account.pw_uid, self._account.pw_gid)
        port = free_loopback_port()
        data = directory / "data"
        settings = " ".join(f"-c {name}={value}" for name, value in self._settings.items())
        try:
            subprocess.run([*self._run_as, self._initdb, "-D", str(data), "-A", "trust", "-U", "qrgate",
                            "--no-sync"], check=True, capture_output=True)
            subprocess.run([*self._run_as, self._pg_ctl, "-D", str(data), "-l", str(directory / "log"), "-w",
                            "start", "-o", f"-k {directory} -p {port} -c listen_addresses='' {settings}"],
                           check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            log = (directory / "log").read_text(errors="replace") if (directory / "log").exists() else ""
            self.stop()
            raise PostgresUnavailable(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')}{log}") from exc
        self.dsn = f"host={directory} port={port} user=qrgate dbname=postgres"
        return self.dsn

    def stop(self) -> None:
        if self.directory is None:
            return
        subprocess.run([*self._run_as, self._pg_ctl, "-D", str(self.directory / "data"), "-m", "immediate", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = self.dsn = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(server_dsn: str, name: str | None = None) -> str:
    """A new empty database on the server of ``server_dsn`` (its ``postgres`` database); the new one's DSN."""
    import psycopg

    name = name or f"db_{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(server_dsn, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_dsn.replace("dbname=postgres", f"dbname={name}")
