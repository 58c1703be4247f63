"""The MQTT side of the reference consumer: every gate's check-ins in, acknowledgements out.

Subscription. Every gate's check-ins through an MQTT 5 shared subscription
(``$share/<group>/qrgate/v1/device/+/checkin``): the broker hands each message to one member of
the group, so more instances share the load and the others carry on when one stops. The session is
persistent (clean start off, a session expiry interval, QoS 1, a client id stable per instance), so
the broker keeps what arrives for an instance while it is away.

Batches. Whatever arrived while the previous batch committed goes into the next transaction (group
commit: one fsync per batch, no added latency). Only after that commit does the consumer acknowledge:

- to the broker: its PUBACK (paho's ``manual_ack``), so a consumer that dies before committing gets
  the messages again when it reconnects;
- to each device: one ``wire.CheckinAck`` per device and batch, with the event ids just committed
  (new ones and duplicates alike), on ``wire.ack_topic(device)`` at QoS 1. A gate with end-to-end
  acks keeps each event until this arrives, and sends it again when it does not.

A PUBACK is sent only on the connection the message came on: after a reconnect the broker sends
the unacknowledged messages again under the same packet ids, and a PUBACK for an old copy could
acknowledge a different message that reused the id. The new copies are stored (as duplicates: a
no-op) and acknowledged then.

Bad input. A payload that is not a valid check-in, or whose device id differs from its topic's, is
counted, logged with the topic and the schema error (never the payload) and acknowledged to the
broker (a redelivery cannot repair it) but never to the device. Logs hold counts and device ids,
never pass or subject ids.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from qrgate import wire

from ..errors import ConsumerError
from .store import EventStore

log = logging.getLogger(__name__)

DEFAULT_GROUP = "qrgate-consumers"
BATCH_MAX = 500  # messages per transaction; also the Receive Maximum asked of the broker
SESSION_EXPIRY_S = 7 * 86_400  # how long the broker keeps an absent consumer's session and queue
_STORE_RETRY_MAX_S = 30.0  # a failing database is retried with backoff up to this wait
_STATS_LOG_INTERVAL_S = 60.0


def shared_checkins(group: str) -> str:
    """The shared subscription to every device's check-ins for consumer group ``group``."""
    if not group or any(c in group for c in "/+#"):
        raise ConsumerError(f"consumer group {group!r} cannot be a topic level")
    return f"$share/{group}/{wire.ALL_CHECKINS}"


@dataclass(frozen=True, slots=True)
class ConsumerTls:
    """TLS to the broker: the CA of its certificate, and this consumer's own for mutual TLS."""

    ca_file: str | Path
    cert_file: str | Path | None = None
    key_file: str | Path | None = None


@dataclass(slots=True)
class ConsumerStats:
    """Counters since start, logged every minute and printed as JSON when ``consumer run`` ends."""

    connected: bool = False
    received: int = 0  # check-in messages, redeliveries included
    stored: int = 0  # new events committed
    duplicates: int = 0  # valid events that were already stored
    malformed: int = 0  # not a check-in, or not from the device its topic names
    acks_sent: int = 0  # CheckinAck messages published to devices
    batches: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Message:
    epoch: int  # which connection it came on: PUBACKs go only on that one
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class _Batch:
    valid: list[tuple[wire.CheckinEvent, bytes]] = field(default_factory=list)
    acks: dict[str, list[str]] = field(default_factory=dict)  # device id -> event ids
    malformed: int = 0


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _device_of(topic: str) -> str | None:
    parts = topic.split("/")
    if (len(parts) == 5 and f"{parts[0]}/{parts[1]}" == wire.TOPIC_ROOT and parts[2] == "device"
            and parts[4] == "checkin"):
        return parts[3]
    return None


class Consumer:
    """Stores every gate's check-ins exactly once and acknowledges them after the commit.

    ``start()`` returns at once (paho connects and reconnects in the background); ``stop()``
    finishes the batch in hand, disconnects (the session stays at the broker) and closes nothing it
    was given: the caller owns ``store``.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        host: str,
        port: int,
        client_id: str | None = None,
        group: str = DEFAULT_GROUP,
        tls: ConsumerTls | None = None,
        username: str | None = None,
        password: str | None = None,
        session_expiry_s: int = SESSION_EXPIRY_S,
        keepalive: int = 30,
        end_to_end_ack: bool = True,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.store = store
        self.host, self.port = host, port
        self.client_id = client_id or f"qrgate-consumer-{socket.gethostname()}"
        self.topic = shared_checkins(group)
        self._session_expiry_s = session_expiry_s
        self._keepalive = keepalive
        self._end_to_end = end_to_end_ack
        self._batch_max = batch_max
        self._incoming: queue.Queue[_Message] = queue.Queue()
        self._epoch = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = ConsumerStats()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        if tls is not None:
            self._client.tls_set(
                ca_certs=str(tls.ca_file),
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Consumer:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no annotations
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._batch_max  # the broker never has more unacknowledged with us
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive, clean_start=False,
                                   properties=properties)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="qrgate-consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(_STORE_RETRY_MAX_S + 5)
            self._thread = None
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker acknowledged the subscription (on this connection) within ``timeout``."""
        return self._subscribed.wait(timeout)

    # --- paho's thread -------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, flags: object, reason: ReasonCode,
                    _props: object) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.warning("consumer: %s", self.stats.last_error)
            return
        with self._lock:
            self._epoch += 1
        self.stats.connected = True
        # PUBACKs and acknowledgements are small packets each awaited by the other side: Nagle's
        # algorithm would hold them back for a TCP ACK (measured: end-to-end drain 4x slower).
        sock = client.socket()
        if isinstance(sock, socket.socket):  # TLS sockets are too
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.topic, qos=wire.QOS)
        log.info("consumer %s connected to %s:%d (session present: %s)", self.client_id, self.host, self.port,
                 getattr(flags, "session_present", None))

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reasons: list[ReasonCode],
                      _props: object) -> None:
        if any(reason.is_failure for reason in reasons):
            self.stats.last_error = f"broker refused the subscription to {self.topic}: {reasons[0]}"
            log.error("consumer: %s", self.stats.last_error)
            return
        self._subscribed.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                       _props: object) -> None:
        self._subscribed.clear()
        self.stats.connected = False
        if not self._stopping.is_set():
            self.stats.last_error = f"connection lost: {reason}"
            log.warning("consumer: connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            epoch = self._epoch
        self._incoming.put(_Message(epoch, message.mid, message.qos, message.topic, bytes(message.payload)))

    # --- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        next_log = time.monotonic() + _STATS_LOG_INTERVAL_S
        while not self._stopping.is_set():
            batch = self._take_batch()
            if batch:
                self._handle(batch)
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + _STATS_LOG_INTERVAL_S
                log.info("consumer: %s", self.stats)

    def _take_batch(self) -> list[_Message]:
        """What has arrived, up to ``batch_max``; waits briefly for the first message only."""
        try:
            batch = [self._incoming.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self._batch_max:
            try:
                batch.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, messages: list[_Message]) -> None:
        batch = self._parse(messages)
        new = self._commit(batch)
        if new is None:
            return  # stopping with the batch unstored: unacknowledged, the broker sends it again
        with self._lock:
            epoch = self._epoch
        for message in messages:
            if message.qos and message.epoch == epoch:
                self._client.ack(message.mid, message.qos)
        acks_sent = 0
        if self._end_to_end:
            for device_id, event_ids in batch.acks.items():
                for chunk in _chunks(event_ids, wire.MAX_ACK_EVENT_IDS):
                    ack = wire.CheckinAck(event_ids=chunk, consumer=self.client_id)
                    self._client.publish(wire.ack_topic(device_id), ack.to_json(), qos=wire.QOS)
                    acks_sent += 1
        stats = self.stats
        stats.received += len(messages)
        stats.stored += new
        stats.duplicates += len(batch.valid) - new
        stats.malformed += batch.malformed
        stats.acks_sent += acks_sent
        stats.batches += 1
        log.debug("consumer: batch of %d: %d new, %d duplicates, %d malformed, %d devices",
                  len(messages), new, len(batch.valid) - new, batch.malformed, len(batch.acks))

    def _parse(self, messages: list[_Message]) -> _Batch:
        batch = _Batch()
        for message in messages:
            device_id = _device_of(message.topic)
            try:
                event = wire.CheckinEvent.from_json(message.payload)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "payload"
                log.warning("consumer: not a check-in on %s (%s: %s); dropped", message.topic, where, first["msg"])
                batch.malformed += 1
                continue
            if event.device_id != device_id:
                log.warning("consumer: check-in seq %d on %s names device %r; dropped", event.seq, message.topic,
                            event.device_id)
                batch.malformed += 1
                continue
            batch.valid.append((event, message.payload))
            batch.acks.setdefault(event.device_id, []).append(event.event_id)
        return batch

    def _commit(self, batch: _Batch) -> int | None:
        """Store the batch, retrying with backoff while the database fails; None if stopped first."""
        delay = 0.5
        while True:
            try:
                return self.store.store(batch.valid, time.time())
            except ConsumerError as exc:
                self.stats.last_error = str(exc)
                log.error("consumer: %s; retrying in %.1f s (nothing is acknowledged meanwhile)", exc, delay)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, _STORE_RETRY_MAX_S)

