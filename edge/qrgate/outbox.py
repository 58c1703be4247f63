"""The durable outbox: every check-in event is committed to SQLite before the gate shows green.

One table holds the events. ``seq`` is the device's sequence number: assigned inside the insert
transaction, 1-based and gap-free, and never reused (AUTOINCREMENT keeps its high-water mark even
when every row has been pruned). An event is *pending* (``delivered IS NULL``) until it is
delivered, which means, depending on the uplink's mode:

- without end-to-end acknowledgements: the broker's PUBACK (``mark_delivered``);
- with them: the province's consumer acknowledged its event id (``mark_acknowledged``). In between
  the broker's PUBACK makes it *published* (``mark_published``: the time of that PUBACK), and the
  uplink sends it again if the consumer's acknowledgement does not follow in time.

Delivered rows are kept, newest first, up to ``keep_delivered`` of them (a technician can read the
last check-ins on the device) and older ones are deleted in the same transaction that records new
deliveries, so the file stops growing once the link is up.

Durability: WAL journal with ``synchronous=FULL``, so ``append`` returns only after the WAL is
fsync'd. Nothing is ever dropped: a full disk, a read-only or corrupt file raises ``OutboxError``
(``OutboxFull`` for a full disk) and the caller shows the visitor a storage error; the fault is
also kept in ``health().storage_error`` until a write succeeds again. ``max_bytes`` is a reporting
threshold only (``over_limit``), never a reason to refuse or delete an event.

Schema (in outbox_file.py, with the checks made on opening and the naming of storage faults).
``user_version`` counts incompatible changes. The ``published`` column came later as an additive,
nullable column: a file without it is given it on open, and an older qrgate that does not know it
still reads the file correctly (a published row is pending to it, so it is sent again), so rolling
the software back never strands events. That is why the version stayed 1.

Threads: one connection, shared by the thread that delivers decoded frames to the gate (``append``:
a decode worker, or the capture loop with decoder.workers = 0) and the uplink's publisher thread
(everything else), serialised by a lock. SQLite admits one writer at a time anyway, and a waiter on
a Python lock wakes as soon as it is released, where SQLite's busy handler would poll with sleeps of
up to 100 ms: an append's worst case is one short transaction of the publisher.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .clock import Clock
from .errors import OutboxError
from .outbox_file import classify, open_database, rollback
from .wire import CheckinEvent

_MAX_SEQ = 2**63 - 1  # SQLite's largest integer: "no upper bound" for a seq range


class PendingEvent(NamedTuple):
    seq: int
    event_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxHealth:
    """A snapshot for status and telemetry. Never raises: what cannot be read is None, and the
    reason is in ``storage_error``."""

    pending: int | None  # not yet delivered
    awaiting_ack: int | None  # published, waiting for the consumer's acknowledgement
    oldest_pending_wall: float | None  # Unix seconds the oldest pending event was stored
    size_bytes: int | None
    max_bytes: int | None
    disk_free_bytes: int | None  # free for an unprivileged writer on the outbox's file system
    storage_error: str | None  # the latest storage fault, until a write succeeds again

    @property
    def over_limit(self) -> bool:
        return self.max_bytes is not None and self.size_bytes is not None and self.size_bytes > self.max_bytes


class _SystemTime:
    """Stands in for a Clock when none is given; only two of its methods are needed here."""

    wall = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)


class Outbox:
    """SQLite-backed queue of check-in events. Context manager; ``close()`` is idempotent."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        keep_delivered: int = 1000,
        clock: Clock | None = None,
    ) -> None:
        if keep_delivered < 0:
            raise ValueError("keep_delivered must be >= 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep_delivered = keep_delivered
        self._clock = clock or _SystemTime()
        self._lock = threading.Lock()
        self._storage_error: str | None = None
        self._db: sqlite3.Connection | None = open_database(self.path)

    def _error(self, doing: str, exc: sqlite3.Error) -> OutboxError:
        error = classify(self.path, doing, exc)
        self._storage_error = str(error)
        return error

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._db

    def append(self, build: Callable[[int], CheckinEvent]) -> CheckinEvent:
        """Store the event ``build(seq)`` under the next sequence number; durable when this returns.

        ``build`` runs inside the write transaction, so a failure in it (or in the insert) leaves no
        gap in the sequence. Raises OutboxFull when the disk is full, OutboxError for other storage
        faults, and lets exceptions from ``build`` through.
        """
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    seq = self._last_seq(db) + 1
                    event = build(seq)
                    if event.seq != seq:
                        raise ValueError(f"event built with seq {event.seq}, expected {seq}")
                    db.execute(
                        "INSERT INTO events (seq, event_id, created_mono, created_wall, payload)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (seq, event.event_id, self._clock.monotonic(), self._clock.wall(), event.to_json()),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    rollback(db)
                    raise
            except sqlite3.Error as exc:
                raise self._error("event not stored", exc) from exc
            self._storage_error = None
        return event

    @staticmethod
    def _last_seq(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return row[0] if row else 0

    def pending(self, limit: int = 100, after_seq: int | None = None) -> list[PendingEvent]:
        """Up to ``limit`` undelivered events with ``seq > after_seq``, oldest first."""
        with self._lock:
            db = self._connection()
            try:
                rows = db.execute(
                    "SELECT seq, event_id, payload FROM events"
                    " WHERE delivered IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                    (after_seq or 0, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error("cannot read pending events", exc) from exc
        return [PendingEvent(seq, event_id, bytes(payload)) for seq, event_id, payload in rows]

    def unpublished(self, limit: int = 100, after_seq: int = 0, through_seq: int | None = None) -> list[PendingEvent]:
        """Up to ``limit`` pending events never acknowledged by the broker, ``after_seq < seq <=
        through_seq``, oldest first (without end-to-end acks: the same as ``pending``)."""
        with self._lock:
            db = self._connection()
            try:
                rows = db.execute(
                    "SELECT seq, event_id, payload FROM events WHERE delivered IS NULL AND published IS NULL "
                    "AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (after_seq, through_seq if through_seq is not None else _MAX_SEQ, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error("cannot read pending events", exc) from exc
        return [PendingEvent(seq, event_id, bytes(payload)) for seq, event_id, payload in rows]

    def ack_overdue(self, limit: int, waited_s: float) -> list[PendingEvent]:
        """Up to ``limit`` published events whose PUBACK is more than ``waited_s`` old and whose
        consumer acknowledgement has not come, oldest first.

        A PUBACK time in the future counts as overdue too: the wall clock stepped back (a Pi
        without RTC before NTP), and waiting for it to catch up could take hours.
        """
        now_ms = int(self._clock.wall() * 1000)
        with self._lock:
            db = self._connection()
            try:
                rows = db.execute(
                    "SELECT seq, event_id, payload FROM events WHERE delivered IS NULL AND published IS NOT NULL "
                    "AND (published <= ? OR published > ?) ORDER BY seq LIMIT ?",
                    (now_ms - int(waited_s * 1000), now_ms, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error("cannot read events awaiting acknowledgement", exc) from exc
        return [PendingEvent(seq, event_id, bytes(payload)) for seq, event_id, payload in rows]

    def forget_published(self) -> int:
        """Make every published, unacknowledged event unpublished again (sent anew, and delivered by
        its PUBACK): for an uplink running without end-to-end acknowledgements over an outbox
        written with them. Returns how many there were."""
        return self._update(
            "cannot reset published events",
            "UPDATE events SET published = NULL WHERE delivered IS NULL AND published IS NOT NULL",
            [()], prune=False,
        )

    def mark_delivered(self, seqs: Iterable[int]) -> int:
        """Record the broker's acknowledgement of these events (no end-to-end acks) and prune old
        delivered rows.

        Returns how many were pending; a seq already delivered (a duplicate PUBACK after a resend)
        or unknown is ignored.
        """
        now_ms = int(self._clock.wall() * 1000)
        return self._update(
            "cannot mark events delivered",
            "UPDATE events SET delivered = ? WHERE seq = ? AND delivered IS NULL",
            [(now_ms, int(seq)) for seq in seqs], prune=True,
        )

    def mark_published(self, seqs: Iterable[int]) -> int:
        """Record the broker's PUBACK for events that now wait for the consumer's acknowledgement;
        a later PUBACK (after a resend) restarts the wait. Returns how many were pending."""
        now_ms = int(self._clock.wall() * 1000)
        return self._update(
            "cannot mark events published",
            "UPDATE events SET published = ? WHERE seq = ? AND delivered IS NULL",
            [(now_ms, int(seq)) for seq in seqs], prune=False,
        )

    def mark_acknowledged(self, event_ids: Iterable[str]) -> int:
        """Record the consumer's end-to-end acknowledgement: these events are delivered, whether or
        not their PUBACK was seen. Returns how many were pending; unknown or already delivered ids
        (a repeated acknowledgement) are ignored."""
        now_ms = int(self._clock.wall() * 1000)
        return self._update(
            "cannot record acknowledgements",
            "UPDATE events SET delivered = ? WHERE event_id = ? AND delivered IS NULL",
            [(now_ms, str(event_id)) for event_id in event_ids], prune=True,
        )

    def _update(self, doing: str, statement: str, params: list[tuple[int | str, ...]], *, prune: bool) -> int:
        if not params:
            return 0
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    before = db.total_changes
                    db.executemany(statement, params)
                    changed = db.total_changes - before
                    if prune:
                        self._prune(db)
                    db.execute("COMMIT")
                except BaseException:
                    rollback(db)
                    raise
            except sqlite3.Error as exc:
                raise self._error(doing, exc) from exc
            self._storage_error = None
        return changed

    def _prune(self, db: sqlite3.Connection) -> None:
        newest_to_drop = db.execute(
            "SELECT seq FROM events WHERE delivered IS NOT NULL ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (self.keep_delivered,),
        ).fetchone()
        if newest_to_drop is not None:
            db.execute("DELETE FROM events WHERE delivered IS NOT NULL AND seq <= ?", newest_to_drop)

    def pending_count(self) -> int:
        with self._lock:
            db = self._connection()
            try:
                return int(db.execute("SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0])
            except sqlite3.Error as exc:
                raise self._error("cannot count pending events", exc) from exc

    def awaiting_ack_count(self) -> int:
        """Published events waiting for the consumer's acknowledgement."""
        with self._lock:
            db = self._connection()
            try:
                return int(db.execute(
                    "SELECT count(*) FROM events WHERE delivered IS NULL AND published IS NOT NULL"
                ).fetchone()[0])
            except sqlite3.Error as exc:
                raise self._error("cannot count events awaiting acknowledgement", exc) from exc

    def health(self) -> OutboxHealth:
        """Counts, size and free space for status and telemetry; never raises."""
        pending = awaiting = size = None
        oldest: float | None = None
        with self._lock:
            try:
                db = self._connection()
                pending, oldest = db.execute(
                    "SELECT count(*), min(created_wall) FROM events WHERE delivered IS NULL"
                ).fetchone()
                awaiting = db.execute(
                    "SELECT count(*) FROM events WHERE delivered IS NULL AND published IS NOT NULL"
                ).fetchone()[0]
                size = self._size(db)
            except sqlite3.Error as exc:
                self._error("cannot read its state", exc)
            except OutboxError as exc:  # closed
                self._storage_error = str(exc)
        try:
            stat = os.statvfs(self.path.parent)
            free: int | None = stat.f_bavail * stat.f_frsize
        except OSError:
            free = None
        return OutboxHealth(pending, awaiting, oldest, size, self.max_bytes, free, self._storage_error)

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever assigned (0 for a new outbox)."""
        with self._lock:
            db = self._connection()
            try:
                return self._last_seq(db)
            except sqlite3.Error as exc:
                raise self._error("cannot read the sequence number", exc) from exc

    @property
    def size_bytes(self) -> int:
        """Bytes of the database file in use (free pages left by pruning are not counted)."""
        with self._lock:
            db = self._connection()
            try:
                return self._size(db)
            except sqlite3.Error as exc:
                raise self._error("cannot read its size", exc) from exc

    @staticmethod
    def _size(db: sqlite3.Connection) -> int:
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    @property
    def over_limit(self) -> bool:
        """Whether the outbox holds more than ``max_bytes``: a warning for status, nothing is dropped."""
        return self.max_bytes is not None and self.size_bytes > self.max_bytes

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
