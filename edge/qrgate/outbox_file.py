"""The outbox's SQLite file: its schema, the checks made when it is opened, and what a failure means.

Kept apart from the queue operations (outbox.py) because this is the part that meets the storage: a file
system without WAL, a corrupt or foreign file, a newer schema, an SD card that remounted itself read-only, a
full disk. Each gets an ``OutboxError`` that names the real cause and what to do, never SQLite's bare message.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from .errors import OutboxError, OutboxFull

SCHEMA_VERSION = 1
_MAX_SEQ = 2**63 - 1  # SQLite's largest integer: "no upper bound" for a seq range

# One script, one transaction; IF NOT EXISTS because another process may have created it meanwhile.
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- per-device sequence number
    event_id     TEXT    NOT NULL UNIQUE,            -- UUIDv7, the consumers' de-duplication key
    created_mono REAL    NOT NULL,                   -- monotonic seconds (this boot only): ages, not dates
    created_wall REAL    NOT NULL,                   -- Unix seconds
    payload      BLOB    NOT NULL,                   -- CheckinEvent.to_json(), published as is
    delivered    INTEGER,                            -- Unix ms it became delivered; NULL while pending
    published    INTEGER                             -- Unix ms of the latest PUBACK while awaiting the consumer's ack
);
CREATE INDEX IF NOT EXISTS events_pending ON events (seq) WHERE delivered IS NULL;
CREATE INDEX IF NOT EXISTS events_awaiting ON events (seq) WHERE delivered IS NULL AND published IS NOT NULL;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

# For files written before end-to-end acknowledgements (see "Schema" above).
_ADD_PUBLISHED = (
    "ALTER TABLE events ADD COLUMN published INTEGER",
    "CREATE INDEX IF NOT EXISTS events_awaiting ON events (seq) WHERE delivered IS NULL AND published IS NOT NULL",
)


def open_database(path: Path) -> sqlite3.Connection:
    """The outbox file at ``path``, created with the schema if new, checked and migrated if not.

    Raises OutboxError: directory not creatable, no WAL, failed integrity check, unknown schema version, or a
    classified SQLite error.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutboxError(f"outbox {path}: cannot create its directory: {exc}") from exc
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    except sqlite3.Error as exc:
        raise classify(path, "cannot open", exc) from exc
    try:
        journal = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if journal != "wal":
            raise OutboxError(f"outbox {path}: the file system does not support WAL (journal mode {journal!r})")
        db.execute("PRAGMA synchronous=FULL")
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise OutboxError(
                f"outbox {path} failed its integrity check ({'; '.join(problems[:3])}); "
                "move the file aside to start a new outbox (its pending events would not be sent)"
            )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(_SCHEMA)
        elif version != SCHEMA_VERSION:
            raise OutboxError(f"outbox {path} has schema version {version}; this qrgate understands {SCHEMA_VERSION}")
        elif not _has_published_column(db):
            _add_published_column(db)
    except sqlite3.Error as exc:
        db.close()
        raise classify(path, "cannot open", exc) from exc
    except OutboxError:
        db.close()
        raise
    return db


def _has_published_column(db: sqlite3.Connection) -> bool:
    return any(row[1] == "published" for row in db.execute("PRAGMA table_info(events)"))


def _add_published_column(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        if not _has_published_column(db):  # another process may have just done it
            for statement in _ADD_PUBLISHED:
                db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


def classify(path: Path, doing: str, exc: sqlite3.Error) -> OutboxError:
    """The OutboxError for SQLite's ``exc`` while ``doing``, naming the real cause."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if primary == sqlite3.SQLITE_FULL:
        return OutboxFull(f"outbox {path}: {doing}: the disk is full ({exc})")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return OutboxError(f"outbox {path}: {doing}: the database is corrupt ({exc}); "
                           "move the file aside to start a new outbox")
    # SQLite says "unable to open database file" or "disk I/O error" for storage that turned
    # read-only (an SD card's ext4 remounts itself read-only on errors): name the real cause.
    read_only = _read_only_cause(path)
    if read_only is not None or primary == sqlite3.SQLITE_READONLY:
        cause = read_only or "the database is read-only"
        return OutboxError(f"outbox {path}: {doing}: read-only storage: {cause} ({exc})")
    return OutboxError(f"outbox {path}: {doing}: {exc}")


def _read_only_cause(path: Path) -> str | None:
    directory = path.parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"the file system holding {directory} is mounted read-only"
    except OSError:
        return None
    for target in (path, directory):
        if target.exists() and not os.access(target, os.W_OK):
            return f"{target} is not writable by this user"
    return None


def rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any. After SQLITE_FULL or an I/O error SQLite may already have
    rolled back; a failing ROLLBACK must not hide the error that caused it."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
