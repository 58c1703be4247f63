"""The outbox's delivery states with end-to-end acknowledgements: pending -> published -> delivered,
the schema migration that added them, and the health report behind status and telemetry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mqtt_helpers import make_event
from qrgate.clock import ManualClock
from qrgate.errors import OutboxFull
from qrgate.outbox import Outbox


def seqs(rows) -> list[int]:
    return [row.seq for row in rows]


def test_a_published_event_stays_pending_until_the_consumer_acknowledges_its_id(tmp_path: Path) -> None:
    clock = ManualClock()
    with Outbox(tmp_path / "outbox.sqlite", clock=clock) as outbox:
        events = [outbox.append(make_event) for _ in range(5)]
        assert outbox.mark_published([1, 2, 3]) == 3
        assert outbox.pending_count() == 5 and outbox.awaiting_ack_count() == 3
        assert seqs(outbox.unpublished(limit=10)) == [4, 5]
        assert seqs(outbox.pending(limit=10)) == [1, 2, 3, 4, 5]  # pending means "not delivered"

        assert outbox.mark_acknowledged([events[1].event_id, events[3].event_id, "not-an-event-of-ours"]) == 2
        assert seqs(outbox.pending(limit=10)) == [1, 3, 5]
        assert outbox.awaiting_ack_count() == 2
        assert seqs(outbox.unpublished(limit=10)) == [5]
        assert outbox.mark_acknowledged([events[1].event_id]) == 0  # a repeated acknowledgement
        assert outbox.mark_published([2, 4]) == 0  # a PUBACK after the consumer's ack changes nothing


def test_unpublished_pages_by_seq_range(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        for _ in range(8):
            outbox.append(make_event)
        outbox.mark_published([3])
        assert seqs(outbox.unpublished(limit=10, through_seq=5)) == [1, 2, 4, 5]
        assert seqs(outbox.unpublished(limit=2, after_seq=1, through_seq=5)) == [2, 4]
        assert seqs(outbox.unpublished(limit=10, after_seq=5)) == [6, 7, 8]


def test_ack_overdue_counts_from_the_latest_puback_and_treats_a_future_one_as_overdue(tmp_path: Path) -> None:
    clock = ManualClock()
    with Outbox(tmp_path / "outbox.sqlite", clock=clock) as outbox:
        for _ in range(4):
            outbox.append(make_event)
        outbox.mark_published([1, 2])
        clock.advance(10)
        outbox.mark_published([3])
        assert seqs(outbox.ack_overdue(limit=10, waited_s=30)) == []
        clock.advance(25)  # 1 and 2 published 35 s ago, 3 25 s ago
        assert seqs(outbox.ack_overdue(limit=10, waited_s=30)) == [1, 2]
        outbox.mark_published([1])  # resent and acknowledged by the broker again: the wait restarts
        assert seqs(outbox.ack_overdue(limit=10, waited_s=30)) == [2]
        assert seqs(outbox.ack_overdue(limit=1, waited_s=0)) == [1]

        clock.jump_wall(-3600)  # NTP steps the clock back an hour: every PUBACK is "in the future"
        assert seqs(outbox.ack_overdue(limit=10, waited_s=30)) == [1, 2, 3]


def test_forget_published_makes_events_publishable_again(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        for _ in range(3):
            outbox.append(make_event)
        outbox.mark_published([1, 2])
        outbox.mark_delivered([3])
        assert outbox.forget_published() == 2
        assert seqs(outbox.unpublished(limit=10)) == [1, 2]
        assert outbox.awaiting_ack_count() == 0


def test_published_state_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        for _ in range(3):
            outbox.append(make_event)
        outbox.mark_published([2])
    with Outbox(path) as reopened:
        assert reopened.awaiting_ack_count() == 1
        assert seqs(reopened.unpublished(limit=10)) == [1, 3]


def test_a_file_from_before_end_to_end_acks_gets_the_column_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:  # the schema as the first release wrote it
        db.executescript("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, created_mono REAL NOT NULL,
                created_wall REAL NOT NULL, payload BLOB NOT NULL, delivered INTEGER);
            CREATE INDEX events_pending ON events (seq) WHERE delivered IS NULL;
            PRAGMA user_version = 1;
        """)
        old = [make_event(seq) for seq in (1, 2, 3)]
        db.executemany("INSERT INTO events (seq, event_id, created_mono, created_wall, payload, delivered)"
                       " VALUES (?, ?, 0, 0, ?, ?)",
                       [(e.seq, e.event_id, e.to_json(), 1 if e.seq == 1 else None) for e in old])
    with Outbox(path) as outbox:
        assert ([(row.seq, row.event_id) for row in outbox.unpublished(limit=10)]
                == [(2, old[1].event_id), (3, old[2].event_id)])
        outbox.mark_published([2])
        assert outbox.awaiting_ack_count() == 1
        assert outbox.append(make_event).seq == 4
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        indexes = {row[1] for row in db.execute("PRAGMA index_list(events)")}
        assert {"events_pending", "events_awaiting"} <= indexes
    with Outbox(path) as again:  # opening a migrated file does not migrate twice
        assert again.awaiting_ack_count() == 1


def test_health_reports_counts_age_size_and_free_space(tmp_path: Path) -> None:
    clock = ManualClock()
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=10 * 1024 * 1024, clock=clock) as outbox:
        empty = outbox.health()
        assert (empty.pending, empty.awaiting_ack, empty.oldest_pending_wall) == (0, 0, None)
        first_stored = clock.wall()
        for _ in range(3):
            outbox.append(make_event)
            clock.advance(5)
        outbox.mark_published([2])
        outbox.mark_delivered([1])
        health = outbox.health()
        assert (health.pending, health.awaiting_ack) == (2, 1)
        assert health.oldest_pending_wall == first_stored + 5  # seq 2; seq 1 is delivered
        assert health.size_bytes == outbox.size_bytes and health.max_bytes == 10 * 1024 * 1024
        assert not health.over_limit and health.storage_error is None
        assert health.disk_free_bytes > 0
    closed = outbox.health()
    assert closed.pending is None and "closed" in closed.storage_error


def fill_disk(ballast: Path) -> None:
    with pytest.raises(OSError, match="No space left"), open(ballast, "ab") as grow:
        while True:
            grow.write(b"\0" * 4096)
            grow.flush()


def test_a_full_disk_shows_in_health_until_a_write_succeeds_again(small_filesystem: Path) -> None:
    ballast = small_filesystem / "ballast"
    with Outbox(small_filesystem / "outbox.sqlite") as outbox:
        stored = [outbox.append(make_event) for _ in range(3)]
        fill_disk(ballast)
        with pytest.raises(OutboxFull):
            for _ in range(50):
                stored.append(outbox.append(make_event))
        health = outbox.health()
        assert "disk is full" in health.storage_error
        assert health.pending == len(stored)  # nothing was dropped to make room
        assert health.disk_free_bytes < 8192
        ballast.unlink()
        outbox.append(make_event)
        assert outbox.health().storage_error is None
