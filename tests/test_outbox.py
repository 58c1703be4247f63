"""The SQLite outbox: durable, ordered, gap-free, and loud about storage faults."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from mqtt_helpers import make_event
from qrgate.errors import OutboxError, OutboxFull
from qrgate.outbox import Outbox
from qrgate.wire import CheckinEvent


def fill(outbox: Outbox, count: int) -> list[CheckinEvent]:
    return [outbox.append(make_event) for _ in range(count)]


def test_append_assigns_consecutive_seqs_and_stores_the_exact_payload(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        events = fill(outbox, 5)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        pending = outbox.pending(limit=10)
        assert [p.seq for p in pending] == [1, 2, 3, 4, 5]
        assert [p.event_id for p in pending] == [e.event_id for e in events]
        assert [p.payload for p in pending] == [e.to_json() for e in events]
        assert CheckinEvent.from_json(pending[2].payload) == events[2]
        assert outbox.pending_count() == 5 and outbox.last_seq == 5


def test_pending_events_survive_reopen_in_order_and_seq_continues(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        before = fill(outbox, 4)
        outbox.mark_delivered([2])
        expected = outbox.pending(limit=10)
    with Outbox(path) as reopened:
        assert reopened.pending(limit=10) == expected
        assert [p.event_id for p in expected] == [before[i].event_id for i in (0, 2, 3)]
        later = fill(reopened, 2)
        assert [e.seq for e in later] == [5, 6]
        seqs = [p.seq for p in reopened.pending(limit=10)]
        assert seqs == sorted(set(seqs)) == [1, 3, 4, 5, 6]


def test_wal_and_full_synchronous_are_in_force(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        fill(outbox, 1)
        # synchronous is a per-connection setting: it must be read on the outbox's own connection.
        assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert outbox._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with sqlite3.connect(path) as other:  # WAL is recorded in the file itself
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == 1


def test_pending_pages_with_limit_and_after_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        fill(outbox, 6)
        assert [p.seq for p in outbox.pending(limit=2)] == [1, 2]
        assert [p.seq for p in outbox.pending(limit=3, after_seq=2)] == [3, 4, 5]
        assert outbox.pending(limit=3, after_seq=6) == []


def test_a_failing_builder_consumes_no_sequence_number(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        fill(outbox, 1)

        def broken(seq: int) -> CheckinEvent:
            raise RuntimeError("verdict could not be turned into an event")

        with pytest.raises(RuntimeError):
            outbox.append(broken)
        with pytest.raises(ValueError, match="seq 99"):
            outbox.append(lambda seq: make_event(99))
        assert outbox.append(make_event).seq == 2
        assert outbox.pending_count() == 2


def test_mark_delivered_ignores_repeats_and_prunes_to_the_kept_number(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, keep_delivered=3) as outbox:
        fill(outbox, 10)
        assert outbox.mark_delivered([1, 2, 3, 4, 5, 6, 7]) == 7
        assert outbox.mark_delivered([7, 7, 42]) == 0  # a repeated PUBACK, an unknown seq
        assert [p.seq for p in outbox.pending(limit=20)] == [8, 9, 10]
    with sqlite3.connect(path) as db:
        kept = [row[0] for row in db.execute("SELECT seq FROM events WHERE delivered IS NOT NULL ORDER BY seq")]
        assert kept == [5, 6, 7]


def test_seq_is_never_reused_after_every_row_is_pruned(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, keep_delivered=0) as outbox:
        fill(outbox, 3)
        outbox.mark_delivered([1, 2, 3])
        assert outbox.pending_count() == 0
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    with Outbox(path, keep_delivered=0) as reopened:
        assert reopened.append(make_event).seq == 4


def test_over_limit_is_reported_and_nothing_is_dropped(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=64 * 1024) as outbox:
        assert not outbox.over_limit
        events = fill(outbox, 300)
        assert outbox.size_bytes > 64 * 1024
        assert outbox.over_limit
        assert [p.event_id for p in outbox.pending(limit=1000)] == [e.event_id for e in events]


def test_one_writer_and_one_publisher_thread_share_it_safely(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite", keep_delivered=10) as outbox:
        appended: list[int] = []
        errors: list[BaseException] = []

        def capture_loop() -> None:
            try:
                appended.extend(outbox.append(make_event).seq for _ in range(200))
            except BaseException as exc:  # noqa: BLE001  (any failure in the thread, surfaced by the assertion below)
                errors.append(exc)

        writer = threading.Thread(target=capture_loop)
        writer.start()
        delivered = 0
        while writer.is_alive() or outbox.pending_count():
            batch = [p.seq for p in outbox.pending(limit=7)]
            delivered += outbox.mark_delivered(batch)
        writer.join()
        assert not errors
        assert appended == list(range(1, 201))
        assert delivered == 200 and outbox.pending_count() == 0


def test_a_corrupt_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database, it is a shopping list" * 100)
    with pytest.raises(OutboxError, match=r"corrupt.*move the file aside"):
        Outbox(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(OutboxError, match="schema version 7"):
        Outbox(path)


def test_closed_outbox_raises_outbox_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.append(make_event)


def test_full_disk_raises_outbox_full_and_keeps_every_stored_event(small_filesystem: Path) -> None:
    path = small_filesystem / "outbox.sqlite"
    ballast = small_filesystem / "ballast"
    with Outbox(path) as outbox:
        stored = fill(outbox, 3)
        ballast.write_bytes(b"\0" * 1024)
        with pytest.raises(OSError, match="No space left"), open(ballast, "ab") as grow:
            while True:  # take what is left, as a runaway log file would
                grow.write(b"\0" * 4096)
                grow.flush()
        with pytest.raises(OutboxFull, match="disk is full"):
            for _ in range(50):
                stored.append(outbox.append(make_event))
        assert [p.event_id for p in outbox.pending(limit=100)] == [e.event_id for e in stored]
        ballast.unlink()
        after = outbox.append(make_event)
        assert after.seq == stored[-1].seq + 1  # the failed appends left no gap
    with Outbox(path) as reopened:
        assert [p.event_id for p in reopened.pending(limit=100)] == [e.event_id for e in [*stored, after]]


def test_read_only_storage_is_refused_with_a_clear_error(small_filesystem: Path) -> None:
    path = small_filesystem / "outbox.sqlite"
    with Outbox(path) as outbox:
        fill(outbox, 2)
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    with pytest.raises(OutboxError, match=r"read-only storage: the file system holding .* is mounted read-only"):
        Outbox(path)
