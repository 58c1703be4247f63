"""The uplink's command path (uplink/commands.py) and its flush, on the real broker: a command is handed to the
handler on the runner's thread and its answer published on the gate's own response topic with the request's
correlation data; a full queue drops the command (counted); without a handler the topic is not subscribed;
``flush_now`` skips the reconnect back-off and the pause after refusals."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_helpers import DEVICE_ID, append, uplink_for, wait_until, write_acl
from qrgate import wire
from qrgate.outbox import Outbox
from qrgate.uplink.commands import QUEUE_LENGTH
from qrgate_tools.broker import MosquittoBroker


class SlowHandler:
    """Answers every payload 'done', echoing it as the detail; holds each call until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = threading.Event()
        self.threads: set[str] = set()

    def handle(self, payload: bytes) -> wire.CommandResponse:
        self.threads.add(threading.current_thread().name)
        self.running.set()
        self.release.wait(30)
        return wire.CommandResponse(device_id=DEVICE_ID, outcome="done", detail=payload.decode(),
                                    time=wire.iso_utc(time.time()))


class Listener:
    """Records every message on one topic with its MQTT 5 correlation data."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.messages: list[tuple[bytes | None, bytes]] = []
        subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="listener", protocol=mqtt.MQTTv5)
        self._client.on_subscribe = lambda *_args: subscribed.set()
        self._client.on_message = lambda _c, _u, message: self.messages.append(
            (getattr(message.properties, "CorrelationData", None), bytes(message.payload)))
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe(topic, qos=1)
        assert subscribed.wait(10), f"the SUBACK for {topic}"

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def publish(broker: MosquittoBroker, topic: str, payloads: list[bytes], correlation: bytes | None = None,
            response_topic: str | None = None) -> list[str]:
    """Publish at QoS 1 with MQTT 5 properties; the PUBACKs' reason codes."""
    reasons: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator", protocol=mqtt.MQTTv5)
    client.on_publish = lambda _c, _u, _mid, reason, _p: reasons.append(str(reason))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            properties = Properties(PacketTypes.PUBLISH)
            if correlation is not None:
                properties.CorrelationData = correlation
            if response_topic is not None:
                properties.ResponseTopic = response_topic
            client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(10)
        wait_until(lambda: len(reasons) == len(payloads), 10, "the PUBACKs")
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons


def test_commands_run_off_paho_and_the_publisher_and_a_full_queue_drops_them(outbox: Outbox,
                                                                              broker: MosquittoBroker) -> None:
    handler = SlowHandler()
    response_topic = wire.command_response_topic(DEVICE_ID)
    listener = Listener(broker, response_topic)
    with uplink_for(outbox, broker, commands=handler.handle) as uplink:
        wait_until(lambda: uplink.stats.connected, 10, "the uplink connected")
        publish(broker, wire.command_topic(DEVICE_ID), [b"first"], correlation=b"corr-1",
                response_topic="qrgate/v1/device/someone-else/response")
        assert handler.running.wait(10)
        # One is running; QUEUE_LENGTH more wait; the next is dropped (paho's thread never blocks on it).
        more = [f"queued-{n}".encode() for n in range(QUEUE_LENGTH + 1)]
        publish(broker, wire.command_topic(DEVICE_ID), more)
        wait_until(lambda: uplink.stats.commands_dropped == 1, 10, "the dropped command")
        assert uplink.stats.connected  # the link lives on while the handler is busy
        handler.release.set()
        wait_until(lambda: len(listener.messages) == QUEUE_LENGTH + 1, 10, "every queued answer")
        stats = uplink.stats
    listener.close()
    details = [wire.CommandResponse.from_json(payload).detail for _correlation, payload in listener.messages]
    assert details == ["first", *(payload.decode() for payload in more[:QUEUE_LENGTH])]
    # Answered on the gate's own topic (not the one asked for), each with its request's correlation data (or none).
    assert [correlation for correlation, _payload in listener.messages] == [b"corr-1"] + [None] * QUEUE_LENGTH
    assert handler.threads == {"qrgate-commands"}
    assert (stats.commands_received, stats.commands_answered, stats.commands_dropped) == (
        QUEUE_LENGTH + 1, QUEUE_LENGTH + 1, 1)


def test_without_a_handler_the_command_topic_is_not_subscribed(outbox: Outbox, broker: MosquittoBroker) -> None:
    with uplink_for(outbox, broker) as uplink:
        wait_until(lambda: uplink.stats.connected, 10, "the uplink connected")
        time.sleep(0.2)  # the SUBSCRIBE follows the CONNACK
        assert publish(broker, wire.command_topic(DEVICE_ID), [b"anything"]) == ["No matching subscribers"]
        assert uplink.stats.commands_received == 0


def test_flush_now_skips_the_reconnect_back_off(outbox: Outbox, broker: MosquittoBroker) -> None:
    append(outbox, 3)
    broker.stop()
    # Back-off drawn from 0..600 s: without the flush the gate would almost surely wait minutes.
    with uplink_for(outbox, broker, reconnect_min_s=600, reconnect_max_s=600) as uplink:
        wait_until(lambda: uplink.stats.last_error, 10, "the first attempt to fail")
        broker.restart()
        time.sleep(0.5)
        assert not uplink.stats.connected
        uplink.flush_now()
        wait_until(lambda: outbox.pending_count() == 0, 10, "the events delivered after the flush")


def test_flush_now_ends_the_pause_after_refusals(tmp_path: Path, outbox: Outbox) -> None:
    acl = write_acl(tmp_path / "acl", "topic read #", f"topic write {wire.availability_topic(DEVICE_ID)}")
    with MosquittoBroker(tmp_path / "broker", acl_file=acl) as broker, \
            uplink_for(outbox, broker, reconnect_min_s=600, reconnect_max_s=600) as uplink:
        append(outbox, 3)
        uplink.wake()
        wait_until(lambda: uplink.stats.refused >= 1, 10, "a refused check-in")
        write_acl(acl, "topic readwrite #")
        broker.reload()
        time.sleep(1.0)  # the pause (0..600 s) holds: nothing is retried meanwhile
        pending_before = outbox.pending_count()
        uplink.flush_now()
        wait_until(lambda: outbox.pending_count() == 0, 10, "the events delivered after the flush")
    assert pending_before == 3
