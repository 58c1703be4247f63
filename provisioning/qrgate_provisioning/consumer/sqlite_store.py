"""The default store: one SQLite file, WAL, every commit fsync'd before anything is acknowledged.

``synchronous=FULL`` because the consumer acknowledges right after the commit: under WAL's usual
``NORMAL`` a power cut could undo a commit the gates were already told about. ``INSERT OR IGNORE``
on the event id makes a redelivered event a no-op, so storing is idempotent.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from qrgate import wire

from ..errors import ConsumerError
from .store import CHECKIN_COLUMN_COUNT, CHECKIN_COLUMNS, checkin_row
from .summary import SiteDay

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkins (
    event_id     TEXT PRIMARY KEY,     -- the de-duplication key
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,     -- per device, gap-free: a gap is an event still on its way
    site_id      TEXT NOT NULL,
    gate         TEXT NOT NULL,
    direction    TEXT NOT NULL,
    time         TEXT NOT NULL,        -- the gate's decision, ISO 8601 UTC with ms: sorts as text
    clock_synced INTEGER NOT NULL,
    verdict      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    format       TEXT NOT NULL,
    issuer       TEXT,
    pass_id      TEXT,
    subject_id   TEXT,
    received_at  TEXT NOT NULL,        -- when this consumer first stored it
    payload      TEXT NOT NULL         -- the JSON as received: fields of later schema versions are kept
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkins_time ON checkins (time);
CREATE INDEX IF NOT EXISTS checkins_device_seq ON checkins (device_id, seq);
"""

_INSERT = f"INSERT OR IGNORE INTO checkins ({CHECKIN_COLUMNS}) VALUES ({', '.join('?' * CHECKIN_COLUMN_COUNT)})"


class SqliteStore:
    """The default store: one SQLite file, WAL, every commit fsync'd before anything is acknowledged."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            if self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise ConsumerError(f"store {self.path}: the file system does not support WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConsumerError(f"store {self.path}: cannot open: {exc}") from exc
        # The consumer's writer thread stores while a caller may read the summary: one connection, one at a time.
        self._lock = threading.Lock()

    def store(self, events: Sequence[tuple[wire.CheckinEvent, bytes]], received_at: float) -> int:
        if not events:
            return 0
        stamp = wire.iso_utc(received_at)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany(_INSERT, [checkin_row(event, raw, stamp) for event, raw in events])
                new = self._db.total_changes - before
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise ConsumerError(f"store {self.path}: events not stored: {exc}") from exc
        return new

    def daily_summary(self, start_utc: dt.datetime, end_utc: dt.datetime) -> list[SiteDay]:
        with self._lock:
            rows = self._db.execute(
                "SELECT site_id, count(*), sum(verdict = 'accepted'), sum(verdict = 'rejected'), "
                "group_concat(DISTINCT device_id) FROM checkins WHERE time >= ? AND time < ? "
                "GROUP BY site_id ORDER BY site_id",
                (wire.iso_utc(start_utc.timestamp()), wire.iso_utc(end_utc.timestamp())),
            ).fetchall()
        return [SiteDay(site, total, accepted, rejected, tuple(sorted(devices.split(","))))
                for site, total, accepted, rejected, devices in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
