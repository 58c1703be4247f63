"""End-to-end acknowledgements: the gate keeps each event until the province's consumer has
committed it, whatever the broker said. Real Mosquitto, real SQLite on both ends, the reference
consumer."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import (
    DEVICE_ID,
    Subscriber,
    append,
    uplink_for,
    wait_until,
)
from qrgate import wire
from qrgate.config import MqttConfig
from qrgate.outbox import Outbox
from qrgate.uplink import Uplink
from qrgate_provisioning.consumer import Consumer, SqliteStore
from qrgate_tools.broker import MosquittoBroker

CHECKINS = wire.checkin_topic(DEVICE_ID)
ACKS = wire.ack_topic(DEVICE_ID)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    checkins = SqliteStore(tmp_path / "province.sqlite")
    yield checkins
    checkins.close()


def e2e_uplink(outbox: Outbox, broker: MosquittoBroker, **overrides: object) -> Uplink:
    """An uplink that keeps each event until the consumer acknowledges it, resending after 0.5 s."""
    return uplink_for(outbox, broker, **{"end_to_end_ack": True, "ack_timeout_s": 0.5, **overrides})


def consumer_for(store: SqliteStore, broker: MosquittoBroker, client_id: str = "consumer-1") -> Consumer:
    return Consumer(store, host=broker.host, port=broker.port, client_id=client_id)


def stored_ids(store: SqliteStore) -> list[str]:
    with sqlite3.connect(store.path) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM checkins ORDER BY device_id, seq")]


def test_a_pubacked_event_stays_on_the_gate_until_the_consumer_has_committed_it(
    broker: MosquittoBroker, outbox: Outbox, store: SqliteStore
) -> None:
    ids = append(outbox, 30)
    # A consumer that has subscribed once: the broker keeps its session and queues for it.
    with consumer_for(store, broker) as consumer:
        assert consumer.wait_subscribed(5)
    with e2e_uplink(outbox, broker, ack_timeout_s=60) as uplink:
        wait_until(lambda: uplink.stats.awaiting_ack == 30, 5, "30 PUBACKs")
        stats = uplink.stats
        assert stats.pending == 30 and stats.delivered == 0  # the broker has them; the province does not yet
        with consumer_for(store, broker) as consumer:
            wait_until(lambda: outbox.pending_count() == 0, 10, "the consumer's acknowledgements")
            assert consumer.stats.stored == 30 and consumer.stats.duplicates == 0
        stats = uplink.stats
    assert stats.delivered == 30 and stats.awaiting_ack == 0 and stats.resent == 0
    assert sorted(stored_ids(store)) == sorted(ids)


def test_events_the_broker_dropped_are_resent_until_the_consumer_has_them(
    broker: MosquittoBroker, outbox: Outbox, store: SqliteStore
) -> None:
    # No consumer has ever subscribed: mosquitto PUBACKs with "No matching subscribers" and the
    # events are gone from the broker. Without end-to-end acks the gate would call them delivered.
    ids = append(outbox, 12)
    with e2e_uplink(outbox, broker) as uplink:
        wait_until(lambda: uplink.stats.resent >= 12, 10, "resends after the ack timeout")
        assert outbox.pending_count() == 12
        with consumer_for(store, broker) as consumer:
            wait_until(lambda: outbox.pending_count() == 0, 30, "delivery once a consumer listens")
        assert uplink.stats.delivered == 12
    assert sorted(stored_ids(store)) == sorted(ids)
    assert consumer.stats.stored == 12


def test_resends_back_off_while_the_consumer_is_silent(broker: MosquittoBroker, outbox: Outbox) -> None:
    append(outbox, 4)
    timeout = 0.2
    with e2e_uplink(outbox, broker, ack_timeout_s=timeout) as uplink:
        wait_until(lambda: uplink.stats.awaiting_ack == 4, 5, "the first PUBACKs")
        started = time.monotonic()
        time.sleep(4.0)  # an upper bound on resends can only be shown by waiting; a slow machine sends fewer
        elapsed = time.monotonic() - started
        resent = uplink.stats.resent
    # Without backoff: a round of 4 every 0.2 s (80 in 4 s). With it the waits are 0.2, 0.4, 0.8,
    # 1.6, 3.2 s: at most 5 rounds, plus one for the time the first round took to fall due.
    rounds_without_backoff = elapsed / timeout
    assert 4 <= resent <= 4 * 6 < 4 * rounds_without_backoff


def test_the_ack_window_bounds_what_waits_for_the_consumer_and_live_events_still_go(
    broker: MosquittoBroker, outbox: Outbox
) -> None:
    append(outbox, 20)
    with Subscriber(broker.host, broker.port, [CHECKINS]) as subscriber:
        with e2e_uplink(outbox, broker, ack_window=5, ack_timeout_s=60) as uplink:
            wait_until(lambda: uplink.stats.awaiting_ack == 5, 5, "the window to fill")
            time.sleep(1.2)  # longer than the idle poll: the window must hold, which only waiting shows
            assert uplink.stats.awaiting_ack == 5 and uplink.stats.sent == 5
            assert [row.seq for row in outbox.unpublished(limit=30)] == list(range(6, 21))
            [live] = append(outbox, 1)  # a visitor checks in now: it is not held back by the window
            uplink.wake()
            wait_until(lambda: live in {e.event_id for e in subscriber.checkins()}, 5, "the live check-in")
            assert uplink.stats.sent == 6
        assert [e.seq for e in subscriber.checkins()] == [1, 2, 3, 4, 5, 21]


def test_acks_queued_while_the_gate_was_away_are_applied_when_it_returns(
    broker: MosquittoBroker, outbox: Outbox, store: SqliteStore
) -> None:
    with consumer_for(store, broker) as consumer:  # its session exists from now on
        assert consumer.wait_subscribed(5)
    ids = append(outbox, 8)
    with e2e_uplink(outbox, broker, ack_timeout_s=60) as uplink:
        wait_until(lambda: uplink.stats.awaiting_ack == 8, 5, "8 PUBACKs")
    # The gate is off; its session (with the ack subscription) stays at the broker.
    with consumer_for(store, broker) as consumer:
        wait_until(lambda: consumer.stats.acks_sent >= 1 and consumer.stats.stored == 8, 10, "the consumer to catch up")
    assert outbox.pending_count() == 8
    with e2e_uplink(outbox, broker, ack_timeout_s=60) as returning:
        wait_until(lambda: outbox.pending_count() == 0, 10, "the queued acknowledgements")
        assert returning.stats.sent == 0  # delivered by acknowledgement alone: nothing was sent again
    assert sorted(stored_ids(store)) == sorted(ids)


def test_a_malformed_acknowledgement_is_reported_and_ignored(broker: MosquittoBroker, outbox: Outbox) -> None:
    ids = append(outbox, 2)
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv5)
    forger.connect(broker.host, broker.port)
    forger.loop_start()
    try:
        with e2e_uplink(outbox, broker, ack_timeout_s=60) as uplink:
            wait_until(lambda: uplink.stats.awaiting_ack == 2, 5, "2 PUBACKs")
            for payload in (b"not json", b'{"v":1,"event_ids":[]}', b'{"v":1}'):
                forger.publish(ACKS, payload, qos=1).wait_for_publish(5)
            wait_until(lambda: "malformed acknowledgement" in (uplink.stats.last_error or ""), 5, "the report")
            assert outbox.pending_count() == 2
            forger.publish(ACKS, wire.CheckinAck(event_ids=[ids[0]]).to_json(), qos=1).wait_for_publish(5)
            wait_until(lambda: outbox.pending_count() == 1, 5, "the one good acknowledgement")
            assert uplink.stats.connected
    finally:
        forger.loop_stop()
        forger.disconnect()


def test_without_end_to_end_acks_events_left_published_are_sent_again_and_delivered(
    broker: MosquittoBroker, outbox: Outbox
) -> None:
    ids = append(outbox, 3)
    outbox.mark_published([1, 2])  # written by a gate that had end-to-end acks on
    with Subscriber(broker.host, broker.port, [CHECKINS]) as subscriber:
        with Uplink(outbox, MqttConfig(host=broker.host, port=broker.port, tls=False, reconnect_min_s=0.05,
                                       max_backlog_rate=0), device_id=DEVICE_ID) as uplink:
            wait_until(lambda: outbox.pending_count() == 0, 5, "delivery by PUBACK")
            assert uplink.stats.delivered == 3
        wait_until(lambda: len(subscriber.checkins()) == 3, 5, "3 check-ins")
    assert [e.event_id for e in subscriber.checkins()] == ids
