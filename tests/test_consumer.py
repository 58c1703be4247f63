"""The reference consumer: idempotent storage (SQLite, and PostgreSQL when a server can be started
here), acknowledgements only after the commit, shared subscriptions, bad input, the daily summary.
Real Mosquitto, real databases, the consumer as a child process where it is killed."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import Subscriber, make_event, wait_until
from qrgate import wire
from qrgate_provisioning.commands.consumer import add_parser, main
from qrgate_provisioning.consumer import (
    Consumer,
    EventStore,
    PostgresStore,
    SqliteStore,
    daily_summary,
    local_day_bounds,
    shared_checkins,
)
from qrgate_provisioning.errors import ConsumerError
from qrgate_tools.broker import MosquittoBroker

ALL_ACKS = f"{wire.TOPIC_ROOT}/device/+/ack"


def event_at(device: str, seq: int, site: str, when: str, verdict: str = "accepted") -> wire.CheckinEvent:
    return make_event(seq, device).model_copy(update={"site_id": site, "time": when, "verdict": verdict,
                                                      "reason": "accepted" if verdict == "accepted" else "expired"})


# ---- the stores ----------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        opened: EventStore = SqliteStore(tmp_path / "province.sqlite")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        opened = PostgresStore(dsn)
        with opened._db.transaction():  # each test starts from an empty table
            opened._db.execute("TRUNCATE checkins")
    yield opened
    opened.close()


def test_a_store_keeps_each_event_once_and_counts_only_new_ones(store: EventStore) -> None:
    first = [make_event(seq) for seq in (1, 2, 3)]
    assert store.store([(e, e.to_json()) for e in first], time.time()) == 3
    again = [first[1], make_event(4)]
    assert store.store([(e, e.to_json()) for e in again], time.time()) == 1
    assert store.store([], time.time()) == 0
    day = dt.datetime.fromisoformat(first[0].time).date()
    [site] = daily_summary(store, day)
    assert site.checkins == 4


def test_the_daily_summary_counts_per_site_by_the_authorities_local_day(store: EventStore) -> None:
    events = [
        event_at("gate-a", 1, "market-1", "2026-03-01T16:59:59.999Z"),  # 23:59 on the 1st in Hanoi (UTC+7)
        event_at("gate-a", 2, "market-1", "2026-03-01T17:00:00.000Z"),  # 00:00 on the 2nd
        event_at("gate-a", 3, "market-1", "2026-03-02T09:00:00.000Z", "rejected"),
        event_at("gate-b", 1, "market-1", "2026-03-02T10:00:00.000Z"),
        event_at("gate-c", 1, "bus-station", "2026-03-02T16:59:59.999Z", "rejected"),
        event_at("gate-c", 2, "bus-station", "2026-03-02T17:00:00.000Z"),  # the 3rd in Hanoi
    ]
    store.store([(e, e.to_json()) for e in events], time.time())
    hanoi = ZoneInfo("Asia/Ho_Chi_Minh")
    summary = {site.site_id: site for site in daily_summary(store, dt.date(2026, 3, 2), hanoi)}
    assert set(summary) == {"market-1", "bus-station"}
    market, station = summary["market-1"], summary["bus-station"]
    assert (market.checkins, market.accepted, market.rejected, market.devices_seen) == (3, 2, 1, ("gate-a", "gate-b"))
    assert (station.checkins, station.accepted, station.rejected, station.devices_seen) == (1, 0, 1, ("gate-c",))
    [utc_day] = [s for s in daily_summary(store, dt.date(2026, 3, 1)) if s.site_id == "market-1"]
    assert utc_day.checkins == 2
    assert daily_summary(store, dt.date(2026, 2, 1), hanoi) == []


def test_local_day_bounds_follow_the_zone() -> None:
    start, end = local_day_bounds(dt.date(2026, 3, 2), ZoneInfo("Asia/Ho_Chi_Minh"))
    assert (start.isoformat(), end.isoformat()) == ("2026-03-01T17:00:00+00:00", "2026-03-02T17:00:00+00:00")


# ---- the consumer --------------------------------------------------------------------------------

class Publisher:
    """A raw MQTT v5 publisher at QoS 1: plays the gates (and a forger) without their outbox."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"publisher-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def send_all(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def publisher(broker: MosquittoBroker) -> Iterator[Publisher]:
    sender = Publisher(broker)
    yield sender
    sender.close()


def stored(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT device_id, seq FROM checkins ORDER BY device_id, seq").fetchall()


def test_duplicates_are_stored_once_and_acknowledged_every_time(
    broker: MosquittoBroker, publisher: Publisher, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "province.sqlite")
    a1, a2, b1 = make_event(1, "gate-a"), make_event(2, "gate-a"), make_event(1, "gate-b")
    with Subscriber(broker.host, broker.port, [ALL_ACKS], client_id="ack-reader") as acks:
        with Consumer(store, host=broker.host, port=broker.port, client_id="consumer-1") as consumer:
            assert consumer.wait_subscribed(5)
            publisher.send_all([(wire.checkin_topic(e.device_id), e.to_json()) for e in (a1, a2, b1, a1)])
            wait_until(lambda: consumer.stats.received == 4, 5, "4 messages")
            wait_until(lambda: sorted(ids_in(acks)) == sorted([a1.event_id, a2.event_id, b1.event_id, a1.event_id]),
                       5, "every id acknowledged, the duplicate too")
        stats = consumer.stats
    store.close()
    assert stored(tmp_path / "province.sqlite") == [("gate-a", 1), ("gate-a", 2), ("gate-b", 1)]
    assert (stats.stored, stats.duplicates, stats.malformed) == (3, 1, 0)
    by_topic = {m.topic for m in acks.messages}
    assert by_topic == {wire.ack_topic("gate-a"), wire.ack_topic("gate-b")}  # each device only its own
    assert all(wire.CheckinAck.from_json(m.payload).consumer == "consumer-1" for m in acks.messages)


def ids_in(subscriber: Subscriber) -> list[str]:
    return [event_id for m in subscriber.messages for event_id in wire.CheckinAck.from_json(m.payload).event_ids]


def test_bad_checkins_are_dropped_counted_never_acknowledged_to_a_device_and_not_redelivered(
    broker: MosquittoBroker, publisher: Publisher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "province.sqlite")
    spoofed = make_event(1, "gate-b")  # a valid event of gate-b, published on gate-a's topic
    good = make_event(1, "gate-a")
    with Subscriber(broker.host, broker.port, [ALL_ACKS], client_id="ack-reader") as acks:
        with Consumer(store, host=broker.host, port=broker.port, client_id="consumer-1") as consumer:
            assert consumer.wait_subscribed(5)
            publisher.send_all([
                (wire.checkin_topic("gate-a"), b"\xff not json"),
                (wire.checkin_topic("gate-a"), json.dumps({"v": 1, "event_id": "x", "pass_id": "P-SECRET"}).encode()),
                (wire.checkin_topic("gate-a"), spoofed.to_json()),
                (wire.checkin_topic("gate-a"), good.to_json()),
            ])
            wait_until(lambda: consumer.stats.received == 4, 5, "4 messages")
            wait_until(lambda: ids_in(acks) == [good.event_id], 5, "the good one acknowledged")
        with Consumer(store, host=broker.host, port=broker.port, client_id="consumer-1") as again:
            assert again.wait_subscribed(5)
            time.sleep(0.5)  # the broker would redeliver unacknowledged messages right after the CONNACK
            assert again.stats.received == 0
    store.close()
    assert consumer.stats.malformed == 3 and consumer.stats.stored == 1
    assert stored(tmp_path / "province.sqlite") == [("gate-a", 1)]
    assert "P-SECRET" not in caplog.text and spoofed.subject_id not in caplog.text  # no payload in the logs


def test_instances_in_one_group_share_the_checkins_and_store_each_once(
    broker: MosquittoBroker, publisher: Publisher, tmp_path: Path
) -> None:
    path = tmp_path / "province.sqlite"
    stores = [SqliteStore(path), SqliteStore(path)]  # one database, as a province runs it
    events = [make_event(seq, f"gate-{seq % 3}") for seq in range(1, 121)]
    consumers = [Consumer(store, host=broker.host, port=broker.port, client_id=f"consumer-{n}")
                 for n, store in enumerate(stores)]
    try:
        for consumer in consumers:
            consumer.start()
            assert consumer.wait_subscribed(5)
        publisher.send_all([(wire.checkin_topic(e.device_id), e.to_json()) for e in events])
        wait_until(lambda: sum(c.stats.stored for c in consumers) == 120, 10, "120 stored")
    finally:
        for consumer in consumers:
            consumer.stop()
        for store in stores:
            store.close()
    assert all(c.stats.received > 0 for c in consumers)  # both members of the group got a share
    assert sum(c.stats.received for c in consumers) == 120 and sum(c.stats.duplicates for c in consumers) == 0
    assert sorted(stored(path)) == sorted((e.device_id, e.seq) for e in events)


def test_a_consumer_killed_mid_stream_loses_nothing_it_had_not_committed(tmp_path: Path) -> None:
    # Room for the whole stream in the dead consumer's queue (mosquitto's default is 1000 messages).
    with MosquittoBroker(tmp_path / "broker", extra_config="max_queued_messages 100000") as broker:
        db = tmp_path / "province.sqlite"
        command = [sys.executable, "-m", "qrgate_provisioning.consumer", "run", "--host", broker.host,
                   "--port", str(broker.port), "--db", str(db), "--client-id", "consumer-k"]
        events = [make_event(seq, "gate-k") for seq in range(1, 3001)]
        messages = [(wire.checkin_topic("gate-k"), e.to_json()) for e in events]

        def count() -> int:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as reader:
                    return reader.execute("SELECT count(*) FROM checkins").fetchone()[0]
            except sqlite3.Error:
                return 0

        def sessions() -> int:
            return broker.log_tail(200).count("as consumer-k")

        child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        publisher = Publisher(broker)
        try:
            wait_until(lambda: sessions() == 1, 15, "the consumer to connect")
            time.sleep(0.3)  # and subscribe
            first_half = [publisher.client.publish(topic, payload, qos=1) for topic, payload in messages[:2000]]
            wait_until(lambda: count() > 0, 10, "the first commits")
            child.send_signal(signal.SIGKILL)  # while the first half streams in
            child.wait()
            at_kill = count()
            for info in first_half:
                info.wait_for_publish(10)
            publisher.send_all(messages[2000:])  # queued at the broker for the dead consumer's session
            child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: count() == 3000 and sessions() == 2, 30, "every event after the restart")
            child.send_signal(signal.SIGTERM)
            _, err = child.communicate(timeout=15)
        finally:
            publisher.close()
            if child.poll() is None:
                child.kill()
    assert child.returncode == 0, err
    assert 0 < at_kill < 3000  # (normally inside the first half: the kill follows the first commit)
    assert [seq for _, seq in stored(db)] == list(range(1, 3001))


# ---- the command line ----------------------------------------------------------------------------

def test_summary_subcommand_prints_json_per_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteStore(tmp_path / "province.sqlite")
    events = [event_at("gate-a", 1, "market-1", "2026-03-02T02:00:00.000Z"),
              event_at("gate-a", 2, "market-1", "2026-03-02T03:00:00.000Z", "rejected")]
    store.store([(e, e.to_json()) for e in events], time.time())
    store.close()
    assert main(["summary", "--db", str(tmp_path / "province.sqlite"), "--day", "2026-03-02",
                 "--tz", "Asia/Ho_Chi_Minh", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {"day": "2026-03-02", "site_id": "market-1", "checkins": 2, "accepted": 1,
                                "rejected": 1, "devices_seen": ["gate-a"]}
    assert main(["summary", "--db", str(tmp_path / "province.sqlite"), "--day", "2026-03-02"]) == 0
    table = capsys.readouterr().out
    assert "market-1" in table and "2026-03-02 (UTC)" in table
    assert main(["summary", "--db", str(tmp_path / "province.sqlite"), "--tz", "Mars/Olympus"]) == 1
    assert "unknown time zone" in capsys.readouterr().err


def test_add_parsers_registers_the_consumer_command_for_the_issuer_cli() -> None:
    parser = argparse.ArgumentParser(prog="qrgate-issuer")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["consumer", "run", "--host", "broker.example", "--client-id", "c1",
                              "--postgres", "dbname=x"])
    assert (args.host, args.port, args.client_id, args.postgres, args.group) == (
        "broker.example", 8883, "c1", "dbname=x", "qrgate-consumers")
    assert callable(args.run)
    assert shared_checkins(args.group) == "$share/qrgate-consumers/qrgate/v1/device/+/checkin"
    with pytest.raises(ConsumerError, match="topic level"):
        shared_checkins("a/b")
