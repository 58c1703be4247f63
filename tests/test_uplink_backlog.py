"""Draining a backlog after an outage: oldest first, at a bounded rate, without holding back the
check-ins made meanwhile. Real Mosquitto on loopback."""

from __future__ import annotations

import time

import pytest

from mqtt_helpers import (
    DEVICE_ID,
    Subscriber,
    append,
    uplink_for,
    wait_until,
)
from qrgate import wire
from qrgate.errors import UplinkError
from qrgate.outbox import Outbox
from qrgate.uplink import TokenBucket
from qrgate_tools.broker import MosquittoBroker

CHECKINS = wire.checkin_topic(DEVICE_ID)


def test_the_backlog_drains_oldest_first_at_its_rate_while_a_new_checkin_goes_ahead(
    broker: MosquittoBroker, outbox: Outbox
) -> None:
    backlog = append(outbox, 150)  # stored while the link was down
    rate = 50.0
    with (
        Subscriber(broker.host, broker.port, [CHECKINS]) as subscriber,
        uplink_for(outbox, broker, max_backlog_rate=rate) as uplink,
    ):
        started = time.monotonic()
        wait_until(lambda: len(subscriber.checkins()) >= 20, 10, "the drain to start")
        [live] = append(outbox, 1)  # a visitor checks in during the drain
        uplink.wake()
        wait_until(lambda: outbox.pending_count() == 0, 20, "the whole backlog")
        drained_in = time.monotonic() - started
        wait_until(lambda: len(subscriber.checkins()) == 151, 5, "151 check-ins")
    arrived = [e.event_id for e in subscriber.checkins()]
    assert [event_id for event_id in arrived if event_id != live] == backlog  # oldest first
    assert arrived.index(live) < 150  # it did not wait for the backlog to finish
    # The bucket starts with 100 ms worth (5 events): the other 145 need 2.9 s of tokens at least.
    assert drained_in >= (150 - rate * 0.1) / rate * 0.95


def test_without_a_rate_everything_goes_strictly_oldest_first(broker: MosquittoBroker, outbox: Outbox) -> None:
    backlog = append(outbox, 60)
    with Subscriber(broker.host, broker.port, [CHECKINS]) as subscriber:
        with uplink_for(outbox, broker, max_inflight=4) as uplink:
            wait_until(lambda: len(subscriber.checkins()) >= 2, 5, "the drain to start")
            live = append(outbox, 3)
            uplink.wake()
            wait_until(lambda: outbox.pending_count() == 0, 10, "everything")
        wait_until(lambda: len(subscriber.checkins()) == 63, 5, "63 check-ins")
    assert [e.event_id for e in subscriber.checkins()] == backlog + live


def test_live_checkins_keep_a_quarter_of_the_window_from_the_backlog(broker: MosquittoBroker, outbox: Outbox) -> None:
    append(outbox, 30)

    def in_flight() -> int:
        stats = uplink.stats
        return stats.sent - stats.delivered

    with uplink_for(outbox, broker, max_inflight=8, max_backlog_rate=10.0) as uplink:
        wait_until(lambda: uplink.stats.connected, 5, "a connection")
        broker.pause()  # a hung broker: nothing is acknowledged from now on, the window fills
        try:
            wait_until(lambda: in_flight() == 6, 5, "the backlog's share of the window")
            time.sleep(1.2)  # longer than the idle poll and 10 tokens: the backlog must not take the rest
            assert in_flight() == 6
            append(outbox, 3)
            uplink.wake()
            wait_until(lambda: in_flight() == 8, 5, "live events in the reserved slots")
        finally:
            broker.resume()
        wait_until(lambda: outbox.pending_count() == 0, 10, "everything once the broker answers")


def test_token_bucket_grants_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(10.0, burst=2.0)
    assert bucket.available(100.0) == 2
    bucket.take(2)
    assert bucket.available(100.0) == 0
    assert bucket.next_in() == pytest.approx(0.1)
    assert bucket.available(100.25) == 2  # refilled, but never beyond the burst
    assert bucket.available(110.0) == 2
    unlimited = TokenBucket(None, burst=0)
    unlimited.take(10**6)
    assert unlimited.available(0.0) > 10**6 and unlimited.next_in() == 0.0
    with pytest.raises(UplinkError, match="positive"):
        TokenBucket(0.0, burst=1)
