"""The uplink's schedule without a broker: a real SQLite outbox, a fake ``send`` that hands out message ids, and
PUBACKs and consumer acknowledgements played by the test. Also: reading the uplink's stats runs no SQL."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_helpers import append, build_uplink
from qrgate.config import MqttConfig
from qrgate.outbox import Outbox, PendingEvent
from qrgate.uplink import Schedule
from qrgate.uplink.health import UplinkHealth
from qrgate.uplink.schedule import Acknowledged
from qrgate.uplink.session import Progress
from qrgate_tools.broker import free_loopback_port


class FakeClock:
    """The outbox's wall clock, which times PUBACKs and so decides when an acknowledgement is overdue."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class FakeSend:
    """Stands in for paho's publish: records the seqs sent, in order, and hands out message ids."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._mids = itertools.count(1)
        self.drop_after: int | None = None  # the connection drops once this many have been sent

    def __call__(self, event: PendingEvent) -> int | None:
        if self.drop_after is not None and len(self.seqs) >= self.drop_after:
            return None
        self.seqs.append(event.seq)
        return next(self._mids)

    def take(self) -> list[int]:
        """The seqs sent since the last take()."""
        seqs, self.seqs = self.seqs, []
        return seqs


@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="outbox")
def outbox_fixture(tmp_path: Path, clock: FakeClock) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.sqlite", clock=clock) as store:  # type: ignore[arg-type]
        yield store


def schedule_for(outbox: Outbox, **fields: object) -> tuple[Schedule, UplinkHealth]:
    """A schedule as an ``[mqtt]`` section with ``fields`` describes it (defaults from config.py)."""
    config = MqttConfig.model_validate({"tls": False, **fields})
    health = UplinkHealth(outbox, end_to_end=config.end_to_end_ack)
    return Schedule.of(outbox, health, config), health


def puback(schedule: Schedule, progress: Progress, seqs: list[int] | None = None) -> None:
    """The broker accepts the check-ins in flight (those with ``seqs``, or all), recorded as one round."""
    found = Acknowledged()
    for mid, flight in list(progress.inflight.items()):
        if seqs is None or flight.seq in seqs:
            schedule.accepted(progress.inflight.pop(mid), found)
    schedule.record(found)


def consumer_ack(schedule: Schedule, event_ids: list[str]) -> None:
    found = Acknowledged()
    schedule.consumer_acked(event_ids, found)
    schedule.record(found)


def test_cursors_advance_through_the_window_and_a_full_window_sends_nothing(outbox: Outbox) -> None:
    append(outbox, 10)
    schedule, health = schedule_for(outbox, max_inflight=4, max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    assert schedule.publish(progress, send, 0.0) is True  # more wait
    assert send.take() == [1, 2, 3, 4] and progress.backlog_cursor == 4
    assert schedule.publish(progress, send, 0.0) is True and send.take() == []  # the window is full
    puback(schedule, progress)
    assert outbox.pending_count() == 6 and health.snapshot().delivered == 4
    schedule.publish(progress, send, 0.0)
    assert send.take() == [5, 6, 7, 8] and progress.backlog_cursor == 8
    puback(schedule, progress)
    assert schedule.publish(progress, send, 0.0) is False  # the last two: nothing more waits
    assert send.take() == [9, 10]
    assert health.snapshot().sent == 10


def test_a_dropped_connection_ends_the_round_and_the_cursor_stays_at_what_was_sent(outbox: Outbox) -> None:
    append(outbox, 5)
    schedule, health = schedule_for(outbox, max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    send.drop_after = 2
    schedule.begin(progress)
    schedule.publish(progress, send, 0.0)
    assert send.take() == [1, 2] and len(progress.inflight) == 2 and progress.backlog_cursor == 2
    assert health.snapshot().sent == 2


def test_the_backlog_mark_puts_checkins_stored_after_the_connection_ahead_of_the_backlog(outbox: Outbox) -> None:
    append(outbox, 5)  # the outage's backlog
    schedule, _ = schedule_for(outbox, max_inflight=8, max_backlog_rate=10.0)  # a bucket of 1 token
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    assert progress.backlog_mark == 5
    append(outbox, 2)  # visitors after the reconnect: live
    schedule.publish(progress, send, 0.0)
    assert send.take() == [6, 7, 1]  # live first, then one backlog event for the one token
    assert progress.live_cursor == 7 and progress.backlog_cursor == 1 and progress.throttled
    assert schedule.bucket.next_in() == pytest.approx(0.1)
    schedule.publish(progress, send, 0.05)
    assert send.take() == []  # half a token
    schedule.publish(progress, send, 0.1)
    assert send.take() == [2]


def test_without_a_rate_the_backlog_and_live_checkins_go_strictly_oldest_first(outbox: Outbox) -> None:
    append(outbox, 3)
    schedule, _ = schedule_for(outbox, max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    append(outbox, 2)
    schedule.publish(progress, send, 0.0)
    assert send.take() == [1, 2, 3, 4, 5] and progress.backlog_mark == 3


def test_the_ack_window_holds_new_events_until_the_consumer_acknowledges(outbox: Outbox) -> None:
    ids = append(outbox, 10)
    schedule, health = schedule_for(outbox, end_to_end_ack=True, ack_window=3, max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    schedule.publish(progress, send, 0.0)
    assert send.take() == [1, 2, 3]
    schedule.publish(progress, send, 0.0)
    assert send.take() == []  # three in flight fill the window
    puback(schedule, progress)
    assert health.snapshot().awaiting_ack == 3 and health.snapshot().delivered == 0
    schedule.publish(progress, send, 0.0)
    assert send.take() == []  # three published, waiting for the consumer
    consumer_ack(schedule, ids[:2])
    assert health.snapshot().awaiting_ack == 1 and health.snapshot().delivered == 2 and outbox.pending_count() == 8
    schedule.publish(progress, send, 0.0)
    assert send.take() == [4, 5]


def test_an_unacknowledged_event_is_resent_after_the_timeout_which_doubles_while_the_consumer_is_silent(
    outbox: Outbox, clock: FakeClock
) -> None:
    ids = append(outbox, 3)
    schedule, health = schedule_for(outbox, end_to_end_ack=True, ack_timeout_s=10.0, max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    schedule.publish(progress, send, clock.now)
    puback(schedule, progress)  # published at t=0
    send.take()
    clock.now += 9.0
    schedule.publish(progress, send, clock.now)
    assert send.take() == []  # not overdue yet
    clock.now += 2.0
    schedule.publish(progress, send, clock.now)
    assert send.take() == [1, 2, 3] and health.snapshot().resent == 3
    assert schedule.resend_wait_s == 20.0  # silence: the next wait is twice as long
    puback(schedule, progress)  # published again at t=11
    clock.now += 15.0
    schedule.publish(progress, send, clock.now)
    assert send.take() == []  # 15 s < 20 s
    clock.now += 6.0
    schedule.publish(progress, send, clock.now)
    assert send.take() == [1, 2, 3] and schedule.resend_wait_s == 40.0
    puback(schedule, progress)
    consumer_ack(schedule, ids[:1])  # the consumer is back: losses are single ones, resent soon again
    assert schedule.resend_wait_s == 10.0 and outbox.pending_count() == 2


def test_overdue_events_are_resent_in_seq_order_not_in_the_order_of_their_pubacks(
    outbox: Outbox, clock: FakeClock
) -> None:
    append(outbox, 6)
    schedule, health = schedule_for(outbox, end_to_end_ack=True, ack_timeout_s=10.0, max_inflight=3,
                                    max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    schedule.publish(progress, send, clock.now)
    assert send.take() == [1, 2, 3]
    for seq in (3, 1, 2):  # PUBACKs one second apart, the last event's first
        puback(schedule, progress, [seq])
        clock.now += 1.0
    schedule.publish(progress, send, clock.now)
    assert send.take() == [4, 5, 6]
    puback(schedule, progress)
    clock.now += 11.0  # all six overdue
    schedule.publish(progress, send, clock.now)
    assert send.take() == [1, 2, 3]
    assert all(flight.resend and flight.backlog for flight in progress.inflight.values())
    puback(schedule, progress)
    clock.now += 10.0  # the resends doubled the wait: 4 to 6 are overdue again 20 s after their PUBACK
    schedule.publish(progress, send, clock.now)
    assert send.take() == [4, 5, 6] and health.snapshot().resent == 6


def test_a_refused_event_is_published_again_in_order_with_those_after_it(outbox: Outbox) -> None:
    append(outbox, 5)
    schedule, health = schedule_for(outbox, max_inflight=3, max_backlog_rate=0)
    progress, send = Progress(), FakeSend()
    schedule.begin(progress)
    schedule.publish(progress, send, 0.0)
    assert send.take() == [1, 2, 3]
    [refused_mid] = [mid for mid, flight in progress.inflight.items() if flight.seq == 2]
    schedule.refused(progress, progress.inflight.pop(refused_mid))
    assert progress.backlog_cursor == 1
    puback(schedule, progress)  # 1 and 3
    schedule.publish(progress, send, 0.0)
    assert send.take() == [2, 4, 5]
    assert outbox.pending_count() == 3 and health.snapshot().delivered == 2


class StatementLog:
    """The SQL statements the outbox's connection runs on one thread (sqlite3's trace callback)."""

    def __init__(self, outbox: Outbox) -> None:
        self.statements: list[str] = []
        self._thread = threading.get_ident()
        self._db = outbox._db  # the outbox keeps its one connection private; the test only listens to it
        assert self._db is not None
        self._db.set_trace_callback(self._record)

    def _record(self, statement: str) -> None:
        if threading.get_ident() == self._thread:
            self.statements.append(statement)

    def take(self) -> list[str]:
        statements, self.statements = self.statements, []
        return statements

    def close(self) -> None:
        assert self._db is not None
        self._db.set_trace_callback(None)


def test_reading_stats_serves_the_counted_pending_count_without_sql(outbox: Outbox) -> None:
    append(outbox, 3)
    health = UplinkHealth(outbox, end_to_end=False)
    health.pending.count()  # the publisher thread's count
    sql = StatementLog(outbox)
    try:
        assert all(health.snapshot().pending == 3 for _ in range(20))
        assert sql.take() == []
        append(outbox, 1)
        sql.take()
        health.pending.changed()  # what wake() does after the capture loop's append
        assert health.snapshot().pending == 4  # the publisher has not counted again: this reader counts once
        assert len(sql.take()) == 1
        assert health.snapshot().pending == 4 and sql.take() == []
    finally:
        sql.close()


def test_a_running_uplink_counts_after_wake_so_the_capture_thread_reads_stats_without_sql(
    tmp_path: Path, outbox: Outbox
) -> None:
    append(outbox, 2)
    # Nothing listens on the port: the publisher retries, and keeps the count up to date between attempts.
    uplink = build_uplink(outbox, device_id="gate-t1", host="127.0.0.1", port=free_loopback_port(),
                          reconnect_min_s=0.05, reconnect_max_s=0.2)
    uplink.start()
    try:
        append(outbox, 1)
        uplink.wake()
        time.sleep(0.5)  # the publisher answers the wake well within this
        sql = StatementLog(outbox)
        try:
            stats = uplink.stats
            assert stats.pending == 3 and not stats.connected
            assert sql.take() == []
        finally:
            sql.close()
    finally:
        uplink.stop(flush_timeout_s=0)  # nothing to flush to
