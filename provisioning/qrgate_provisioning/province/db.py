"""The province's PostgreSQL store: a small connection pool, and one schema that every room adds its tables to.

The consumer's ``checkins`` table (``consumer.postgres_store.SCHEMA``) is the source of every figure; the rooms
below add what the province knows besides (places, gates, presence, people, reports). Each room module defines
``SCHEMA`` (idempotent ``CREATE ... IF NOT EXISTS`` statements); ``Database.migrate`` runs them all in one
transaction under an advisory lock, so two services starting at once do not race.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..consumer.postgres_store import SCHEMA as CHECKINS_SCHEMA
from ..errors import ProvinceError
from .settings import DatabaseSettings

if TYPE_CHECKING:
    import psycopg

# Rooms with tables, in the order their schemas run (a later one may reference an earlier one's table).
SCHEMA_ROOMS = ("registry", "presence", "accounts", "report_store", "trace", "export", "retention")
_MIGRATION_LOCK = 0x71726761  # "qrga": pg_advisory_xact_lock key of the migration


class Database:
    """A pool of connections to the province's database (psycopg_pool: the web pages, the fleet listener and
    the report each take one for a unit of work and give it back)."""

    def __init__(self, settings: DatabaseSettings, *, max_connections: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ProvinceError("the province service needs psycopg: pip install 'qrgate[province]'") from exc
        self._psycopg = psycopg
        self.dsn = settings.dsn
        try:
            self._pool = ConnectionPool(settings.dsn, min_size=1, max_size=max_connections, open=True,
                                        timeout=10, kwargs={"autocommit": False})
            self._pool.wait(timeout=10)
        except (psycopg.Error, Exception) as exc:  # psycopg_pool raises PoolTimeout (not a psycopg.Error)
            raise ProvinceError(f"PostgreSQL: cannot connect to {_where(settings.dsn)}: {exc}") from exc

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """A connection for one unit of work: committed when the block ends, rolled back if it raises."""
        with self._pool.connection() as connection:
            yield connection

    def migrate(self) -> None:
        """Create every table and index that is missing (the consumer's check-ins, then each room's)."""
        schemas = [CHECKINS_SCHEMA]
        for room in SCHEMA_ROOMS:
            schemas.append(importlib.import_module(f"{__package__}.{room}").SCHEMA)
        try:
            with self.connection() as connection:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                for schema in schemas:
                    connection.execute(schema)
        except self._psycopg.Error as exc:
            raise ProvinceError(f"PostgreSQL: cannot create the province's tables: {exc}") from exc

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _where(dsn: str) -> str:
    """The DSN without its password, for an error message."""
    return " ".join(part for part in dsn.split() if not part.startswith("password="))
