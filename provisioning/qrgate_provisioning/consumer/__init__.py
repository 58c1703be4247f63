"""The reference consumer: the province's end of check-in delivery, and the morning's summary.

Every gate's check-ins arrive through a shared MQTT subscription (``subscriber``), are stored
exactly once by event id (``sqlite_store`` by default, ``postgres_store`` for a province that runs
PostgreSQL: both keep the table of ``store``) and acknowledged only after the commit, to the broker
and to each device. ``summary`` counts one local day per site, what the authorities read every
morning. The command line is ``qrgate-issuer consumer`` (``qrgate_provisioning.commands.consumer``),
also ``python -m qrgate_provisioning.consumer``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConsumerError
from .postgres_store import PostgresStore
from .sqlite_store import SqliteStore
from .store import EventStore
from .subscriber import (
    BATCH_MAX,
    DEFAULT_GROUP,
    SESSION_EXPIRY_S,
    Consumer,
    ConsumerStats,
    ConsumerTls,
    shared_checkins,
)
from .summary import SiteDay, daily_summary, local_day_bounds

__all__ = [
    "BATCH_MAX",
    "DEFAULT_GROUP",
    "SESSION_EXPIRY_S",
    "Consumer",
    "ConsumerStats",
    "ConsumerTls",
    "EventStore",
    "PostgresStore",
    "SiteDay",
    "SqliteStore",
    "daily_summary",
    "local_day_bounds",
    "open_store",
    "shared_checkins",
]


def open_store(sqlite_path: str | Path | None = None, postgres_dsn: str | None = None) -> EventStore:
    """PostgreSQL when a DSN is given, else the SQLite file."""
    if postgres_dsn:
        return PostgresStore(postgres_dsn)
    if sqlite_path is None:
        raise ConsumerError("give a SQLite file or a PostgreSQL DSN for the store")
    return SqliteStore(sqlite_path)
