"""The MQTT uplink against a real Mosquitto on loopback: delivery, outages, refusals, LWT, TLS."""

from __future__ import annotations

import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest

from mqtt_helpers import (
    DEVICE_ID,
    Subscriber,
    UplinkProcess,
    append,
    make_pki,
    persistent_broker,
    retained,
    uplink_for,
    wait_until,
    write_acl,
)
from qrgate import wire
from qrgate.config import MqttConfig
from qrgate.errors import UplinkError
from qrgate.outbox import Outbox
from qrgate.uplink import TlsSettings, Uplink, full_jitter_delay
from qrgate_tools.broker import BrokerTls, MosquittoBroker

CHECKINS = wire.checkin_topic(DEVICE_ID)
AVAILABLE = wire.availability_topic(DEVICE_ID)
STATUS = wire.status_topic(DEVICE_ID)


def distinct_ids(subscriber: Subscriber) -> list[str]:
    """Event ids in order of first arrival, repeats removed (as a consumer de-duplicates)."""
    return list(dict.fromkeys(e.event_id for e in subscriber.checkins()))


def test_delivers_every_event_exactly_once_in_order(broker: MosquittoBroker, outbox: Outbox) -> None:
    ids = append(outbox, 25)
    with Subscriber(broker.host, broker.port, [CHECKINS]) as subscriber, uplink_for(outbox, broker) as uplink:
        more = append(outbox, 25)
        uplink.wake()
        wait_until(lambda: outbox.pending_count() == 0, 5, "every event acknowledged")
        wait_until(lambda: len(subscriber.checkins()) >= 50, 5, "50 check-ins at the subscriber")
        stats = uplink.stats
    received = subscriber.checkins()
    assert [e.event_id for e in received] == ids + more
    assert [e.seq for e in received] == list(range(1, 51))
    assert stats.connected and stats.sent == 50 and stats.delivered == 50 and stats.refused == 0 and stats.pending == 0


def test_an_event_nobody_subscribes_to_counts_as_delivered(broker: MosquittoBroker, outbox: Outbox) -> None:
    # mosquitto acknowledges it with 0x10 "No matching subscribers", a success code: the broker has it.
    append(outbox, 3)
    with uplink_for(outbox, broker) as uplink:
        wait_until(lambda: outbox.pending_count() == 0, 5, "acknowledgements without subscribers")
        assert uplink.stats.delivered == 3


def test_events_stored_while_the_broker_is_down_are_delivered_when_it_starts(tmp_path: Path, outbox: Outbox) -> None:
    site = persistent_broker(tmp_path / "broker")
    with site, Subscriber(site.host, site.port, [CHECKINS], persistent=True) as subscriber:
        site.stop()  # the subscriber's session is saved; the gate has never reached the broker
        with uplink_for(outbox, site) as uplink:
            ids = append(outbox, 10)
            uplink.wake()
            wait_until(lambda: uplink.stats.last_error, 5, "the connection failure to be reported")
            assert "Connection refused" in uplink.stats.last_error
            assert not uplink.stats.connected and uplink.stats.pending == 10
            site.restart()
            wait_until(lambda: outbox.pending_count() == 0, 5, "delivery after the broker started")
            wait_until(lambda: len(subscriber.checkins()) == 10, 5, "10 check-ins")
        assert [e.event_id for e in subscriber.checkins()] == ids


def test_reconnects_after_the_broker_is_killed_and_delivers_what_was_stored_meanwhile(
    tmp_path: Path, outbox: Outbox
) -> None:
    site = persistent_broker(tmp_path / "broker")
    with (
        site,
        Subscriber(site.host, site.port, [CHECKINS], persistent=True) as subscriber,
        uplink_for(outbox, site) as uplink,
    ):
        first = append(outbox, 5)
        uplink.wake()
        wait_until(lambda: len(subscriber.checkins()) == 5, 5, "the first batch")
        site.kill()
        wait_until(lambda: not uplink.stats.connected, 5, "the uplink to notice the broker is gone")
        during = append(outbox, 7)
        uplink.wake()
        site.restart()
        wait_until(lambda: outbox.pending_count() == 0, 10, "delivery after the restart")
        # The killed broker may hand the subscriber a copy it had already delivered (QoS 1).
        wait_until(lambda: distinct_ids(subscriber) == first + during, 5, "the 7 stored during the outage")


def test_a_refused_publish_stays_pending_and_is_retried_until_the_acl_allows_it(tmp_path: Path, outbox: Outbox) -> None:
    acl = write_acl(
        tmp_path / "acl",
        "topic read qrgate/#",
        "pattern write qrgate/v1/device/%c/available",
        "pattern write qrgate/v1/device/%c/status",
    )
    strict = persistent_broker(tmp_path / "broker", acl_file=acl)
    with (
        strict,
        Subscriber(strict.host, strict.port, [CHECKINS], persistent=True) as subscriber,
        uplink_for(outbox, strict) as uplink,
    ):
        [event_id] = append(outbox, 1)
        uplink.wake()
        wait_until(lambda: uplink.stats.refused >= 3, 10, "the publish to be refused and retried")
        stats = uplink.stats
        assert stats.last_refusal == "Not authorized"  # PUBACK reason code 0x87 from mosquitto 2.0
        assert stats.delivered == 0 and stats.pending == 1 and stats.connected
        assert [p.event_id for p in outbox.pending(limit=5)] == [event_id]
        assert subscriber.checkins() == []

        write_acl(acl, "topic read qrgate/#", "pattern write qrgate/v1/device/%c/#")
        # SIGHUP re-reads the ACL without dropping anyone. (A restart would also do, but Mosquitto 2.0.11
        # with an acl_file drops messages for a restored session until its client reconnects.)
        strict.reload()
        wait_until(lambda: outbox.pending_count() == 0, 10, "delivery once the ACL allows it")
        wait_until(subscriber.checkins, 5, "the check-in at the subscriber")
        assert distinct_ids(subscriber) == [event_id]


def test_birth_message_and_status_are_retained(broker: MosquittoBroker, outbox: Outbox) -> None:
    append(outbox, 2)
    with uplink_for(outbox, broker, software_version="9.9.9") as uplink:
        wait_until(lambda: uplink.stats.connected, 5, "a connection")
        online = retained(broker.host, broker.port, AVAILABLE)
        assert online.payload == b"online" and online.retain
        status = wire.DeviceStatus.from_json(retained(broker.host, broker.port, STATUS).payload)
        assert status.state == "online" and status.software == "9.9.9" and status.device_id == DEVICE_ID


def test_clean_stop_flushes_pending_events_then_says_offline_itself(broker: MosquittoBroker, outbox: Outbox) -> None:
    ids = append(outbox, 40)
    with Subscriber(broker.host, broker.port, [CHECKINS, AVAILABLE, STATUS]) as subscriber:
        uplink = uplink_for(outbox, broker, max_inflight=4)
        uplink.start()
        uplink.stop(flush_timeout_s=5)
        assert outbox.pending_count() == 0
        wait_until(lambda: [m.payload for m in subscriber.on(AVAILABLE)] == [b"online", b"offline"], 5,
                   "online then offline")
        assert [e.event_id for e in subscriber.checkins()] == ids
        assert wire.DeviceStatus.from_json(subscriber.on(STATUS)[-1].payload).state == "offline"
    # A clean DISCONNECT: mosquitto logs "disconnected", and discards the Last Will. The log is written by the
    # broker's own loop, possibly a moment after the client saw the connection end: wait for the line.
    wait_until(lambda: f"Client {DEVICE_ID} disconnected." in broker.log_tail(50), 5, "mosquitto's disconnect line")
    assert retained(broker.host, broker.port, AVAILABLE).payload == b"offline"


def test_last_will_marks_a_killed_gate_offline(broker: MosquittoBroker, tmp_path: Path) -> None:
    with Subscriber(broker.host, broker.port, [AVAILABLE, STATUS]) as subscriber:
        child = UplinkProcess(tmp_path / "outbox.sqlite", broker, tmp_path / "stats.json")
        try:
            wait_until(lambda: [m.payload for m in subscriber.on(AVAILABLE)] == [b"online"], 10, "the birth message")
            child.kill()
            wait_until(lambda: [m.payload for m in subscriber.on(AVAILABLE)] == [b"online", b"offline"], 5, "the LWT")
        finally:
            child.kill()
    assert retained(broker.host, broker.port, AVAILABLE).payload == b"offline"
    # The status topic is only what the gate last said; it had no chance to say more.
    assert wire.DeviceStatus.from_json(retained(broker.host, broker.port, STATUS).payload).state == "online"


def test_unacknowledged_events_are_resent_with_the_same_ids_after_a_power_cut(
    broker: MosquittoBroker, outbox: Outbox, tmp_path: Path
) -> None:
    with Subscriber(broker.host, broker.port, [CHECKINS]) as subscriber:
        append(outbox, 10)
        child = UplinkProcess(outbox.path, broker, tmp_path / "stats.json", max_inflight=5)
        try:
            wait_until(lambda: outbox.pending_count() == 0, 10, "the first 10 delivered by the child")
            broker.pause()  # PUBLISHes now go out and no PUBACK comes back
            append(outbox, 12)
            wait_until(lambda: child.stats().get("sent", 0) >= 15, 10, "5 more in flight")
            child.kill()  # the power cut: 5 sent, none acknowledged
        finally:
            child.kill()
            broker.resume()
        assert outbox.pending_count() == 12
        with uplink_for(outbox, broker) as successor:
            wait_until(lambda: outbox.pending_count() == 0, 10, "the successor to deliver the rest")
            assert successor.stats.delivered == 12  # the 5 unacknowledged ones were resent
        stored = dict(_all_events(outbox))
        wait_until(lambda: {e.event_id for e in subscriber.checkins()} == set(stored), 5,
                   "every event at the subscriber")
    copies: dict[str, set[bytes]] = defaultdict(set)
    for message in subscriber.on(CHECKINS):
        copies[wire.CheckinEvent.from_json(message.payload).event_id].add(message.payload)
    assert all(payloads == {stored[event_id]} for event_id, payloads in copies.items())  # a duplicate is the same event


def _all_events(outbox: Outbox) -> list[tuple[str, bytes]]:
    with sqlite3.connect(outbox.path) as db:
        return [(event_id, bytes(payload)) for event_id, payload in db.execute("SELECT event_id, payload FROM events")]


def test_no_more_than_max_inflight_events_await_acknowledgement(broker: MosquittoBroker, outbox: Outbox) -> None:
    with uplink_for(outbox, broker, max_inflight=3) as uplink:
        wait_until(lambda: uplink.stats.connected, 5, "a connection")
        broker.pause()
        try:
            append(outbox, 10)
            uplink.wake()
            wait_until(lambda: uplink.stats.sent == 3, 5, "the window to fill")
            uplink.wake()
            time.sleep(1.5)  # longer than the publisher's idle poll: a negative can only be shown by waiting
            assert uplink.stats.sent == 3
        finally:
            broker.resume()
        wait_until(lambda: outbox.pending_count() == 0, 5, "the rest once acknowledgements flow")
        assert uplink.stats.sent == 10


def test_mutual_tls_with_server_verification(tmp_path: Path, outbox: Outbox) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_broker = MosquittoBroker(
        tmp_path / "broker",
        tls=BrokerTls(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True),
    )
    with tls_broker:
        client_tls = dict(ca_certs=str(pki.ca_cert), certfile=str(pki.client_cert), keyfile=str(pki.client_key))
        with Subscriber(tls_broker.host, tls_broker.port, [CHECKINS], **client_tls) as subscriber:
            ids = append(outbox, 3)
            tls = dict(tls=True, ca_file=str(pki.ca_cert), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
            with uplink_for(outbox, tls_broker, **tls):
                wait_until(lambda: outbox.pending_count() == 0, 5, "delivery over TLS")
                wait_until(lambda: len(subscriber.checkins()) == 3, 5, "3 check-ins")
            assert [e.event_id for e in subscriber.checkins()] == ids

        impostor = make_pki(tmp_path / "other-pki")  # a CA that did not sign the broker's certificate
        wrong = dict(tls=True, ca_file=str(impostor.ca_cert), cert_file=str(impostor.client_cert),
                     key_file=str(impostor.client_key))
        append(outbox, 1)
        with uplink_for(outbox, tls_broker, **wrong) as uplink:
            wait_until(lambda: uplink.stats.last_error, 5, "the verification failure")
            assert "certificate verify failed" in uplink.stats.last_error
            assert not uplink.stats.connected and outbox.pending_count() == 1


def test_unusable_tls_files_fail_at_construction_naming_the_file(tmp_path: Path, outbox: Outbox) -> None:
    pki = make_pki(tmp_path / "pki")
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(UplinkError, match=str(missing)):
        Uplink(outbox, MqttConfig(host="127.0.0.1", port=8883, ca_file=str(missing), cert_file=None, key_file=None),
               device_id=DEVICE_ID)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(UplinkError, match=str(garbage)):
        Uplink(outbox, MqttConfig(host="127.0.0.1", port=8883, ca_file=str(garbage), cert_file=None, key_file=None),
               device_id=DEVICE_ID)
    other = make_pki(tmp_path / "other")
    with pytest.raises(UplinkError, match="not a matching PEM pair"):
        TlsSettings(pki.ca_cert, pki.client_cert, other.client_key).context()
    with pytest.raises(UplinkError, match="go together"):
        TlsSettings(pki.ca_cert, pki.client_cert, None).context()


def test_a_device_id_that_is_not_a_topic_level_is_refused(outbox: Outbox) -> None:
    with pytest.raises(UplinkError, match="topic level"):
        Uplink(outbox, MqttConfig(host="127.0.0.1", port=1883, tls=False), device_id="gate/1")


def test_backoff_has_full_jitter_within_an_exponential_bound() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(60.0, 1.0 * 2**attempt)
        delays = [full_jitter_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling  # spread over the whole interval
    assert full_jitter_delay(10_000, 1.0, 60.0, rng) <= 60.0


def test_the_documented_contract_lists_every_topic_and_payload_field() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "mqtt.md").read_text()
    for topic in (CHECKINS, AVAILABLE, STATUS):
        assert topic.replace(DEVICE_ID, "<device_id>") in doc
    for model in (wire.CheckinEvent, wire.DeviceStatus):
        for name in model.model_fields:
            assert f"| `{name}` |" in doc, f"docs/mqtt.md does not document {model.__name__}.{name}"


def test_retained_province_messages_reach_their_handler_on_the_inbound_thread(
    broker: MosquittoBroker, outbox: Outbox
) -> None:
    import threading

    import paho.mqtt.client as mqtt

    issuer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="trust-issuer", protocol=mqtt.MQTTv5)
    issuer.connect(broker.host, broker.port)
    issuer.loop_start()
    issuer.publish(wire.TRUST_LIST_TOPIC, b"\xd2signed-list-v7", qos=1, retain=True).wait_for_publish(5)
    received: list[tuple[str, bytes, str]] = []

    def on_trust_list(topic: str, payload: bytes) -> None:
        received.append((topic, payload, threading.current_thread().name))
        if len(received) == 1:
            raise ValueError("a handler's bug")  # must not stop the next message from arriving

    uplink = uplink_for(outbox, broker, subscriptions={wire.TRUST_LIST_TOPIC: on_trust_list},
                        status_details=lambda: {"trust_list_version": 7, "clock_synced": True})
    with uplink:
        wait_until(lambda: len(received) == 1, what="the retained trust list")
        issuer.publish(wire.TRUST_LIST_TOPIC, b"\xd2signed-list-v8", qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: len(received) == 2, what="the next trust list")
        status = wire.DeviceStatus.from_json(retained(broker.host, broker.port, STATUS).payload)
    issuer.loop_stop()
    issuer.disconnect()
    assert [(topic, payload) for topic, payload, _ in received] == [
        (wire.TRUST_LIST_TOPIC, b"\xd2signed-list-v7"), (wire.TRUST_LIST_TOPIC, b"\xd2signed-list-v8")]
    assert {thread for _, _, thread in received} == {"qrgate-inbound"}
    assert (status.trust_list_version, status.clock_synced) == (7, True)


def test_stop_flushes_to_a_broker_that_comes_back_within_the_flush_window(
    broker: MosquittoBroker, outbox: Outbox
) -> None:
    import threading

    broker.stop()
    ids = append(outbox, 3)
    uplink = uplink_for(outbox, broker)
    uplink.start()
    wait_until(lambda: uplink.stats.last_error is not None, what="the uplink to notice the broker is down")
    threading.Timer(0.5, broker.restart).start()
    uplink.stop(flush_timeout_s=10)  # SIGTERM while the link is down: keep trying within the window
    assert outbox.pending_count() == 0
    assert uplink.stats.delivered == len(ids)
