"""The ingest benchmark's fast publisher: check-ins of many gates over a few MQTT connections, as fast as the
broker acknowledges them (or at a set rate).

Each connection stands for a site broker's bridge, which carries the check-ins of all the gates of its site into
the provincial broker over one link. Every event is built before the clock starts (``SimulatedGate.checkin``:
real ``wire.CheckinEvent`` JSON, UUIDv7 ids, gap-free seq per device), so what is timed is publishing alone.
One thread drives every connection (paho's external loop, as the simulator), keeping at most ``window`` QoS 1
messages unacknowledged per connection. Runs in its own process (``run_publisher``, spawned), so several can
share the machine's cores.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from qrgate import wire
from qrgate_provisioning.province.settings import BrokerSettings
from qrgate_provisioning.province.simulate_gate import GateIdentity, SimulatedGate, visitor_pool
from qrgate_provisioning.province.simulate_io import ClientLoop


@dataclass(frozen=True, slots=True)
class PublisherJob:
    """What one publisher process sends: ``per_device`` check-ins from each of ``identities``."""

    name: str
    broker: BrokerSettings
    identities: list[GateIdentity]
    per_device: int
    connections: int = 4
    window: int = 100  # unacknowledged QoS 1 messages per connection
    rate: float | None = None  # events per second from this process; None: as fast as acknowledged


@dataclass(slots=True)
class PublisherResult:
    name: str
    published: int = 0
    acknowledged: int = 0
    refused: int = 0  # PUBACKs with a failure reason code
    first_publish: float = 0.0  # time.monotonic()
    last_ack: float = 0.0
    event_ids: list[str] = field(default_factory=list)
    error: str | None = None


def build_events(job: PublisherJob) -> tuple[list[str], list[bytes], list[str]]:
    """Topics, payloads and event ids, device after device within each round of seq numbers (each device's
    check-ins in seq order, the devices interleaved as at a real province)."""
    rng = random.Random(job.name)
    visitors = visitor_pool(rng, 20_000)
    gates = [SimulatedGate(identity, time.time()) for identity in job.identities]
    topics, payloads, ids = [], [], []
    now = time.time()
    for _round in range(job.per_device):
        for gate in gates:
            event = gate.checkin(now, rng, visitors)
            topics.append(wire.checkin_topic(event.device_id))
            payloads.append(event.to_json())
            ids.append(event.event_id)
    return topics, payloads, ids


def run_publisher(job: PublisherJob, ready: Queue[str], start: Event, results: Queue[PublisherResult]) -> None:
    """Build the events, say ready, wait for ``start``, publish them all; put the result."""
    result = PublisherResult(job.name)
    try:
        topics, payloads, result.event_ids = build_events(job)
        link = _Link(job, result)
        ready.put(job.name)
        start.wait()
        link.publish(topics, payloads)
    except Exception as exc:  # noqa: BLE001 - reported to the bench, which prints it
        result.error = f"{type(exc).__name__}: {exc}"
        ready.put(job.name)
    results.put(result)


class _Link:
    """The publisher's connections, driven from one thread."""

    def __init__(self, job: PublisherJob, result: PublisherResult) -> None:
        self._job, self._result = job, result
        self._sent = [0] * job.connections
        self._acked = [0] * job.connections
        self._clients = [mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{job.name}-{number + 1}",
                                     protocol=mqtt.MQTTv5, userdata=number) for number in range(job.connections)]
        self._loop = ClientLoop(self._clients)
        for client in self._clients:
            client.max_inflight_messages_set(job.window)
            client.on_publish = self._acknowledged
            client.on_socket_open = self._opened
            client.on_socket_close = self._closed
            client.connect(job.broker.host, job.broker.port, keepalive=60)
        if not self._loop.drive_until(lambda: all(client.is_connected() for client in self._clients), 10.0):
            raise TimeoutError("the broker did not accept the publisher's connections within 10 s")

    def _opened(self, _client: mqtt.Client, index: int, sock: object) -> None:
        self._loop.opened(index, sock)

    def _closed(self, _client: mqtt.Client, _index: int, sock: object) -> None:
        self._loop.closed(sock)

    def _acknowledged(self, _client: mqtt.Client, index: int, _mid: int, reason: ReasonCode, _props: object) -> None:
        self._acked[index] += 1
        self._result.acknowledged += 1
        self._result.refused += reason.is_failure
        self._result.last_ack = time.monotonic()

    def publish(self, topics: list[str], payloads: list[bytes]) -> None:
        job, result = self._job, self._result
        total, position = len(payloads), 0
        started = result.first_publish = time.monotonic()
        while result.acknowledged < total:
            allowed = total if job.rate is None else min(total, int((time.monotonic() - started) * job.rate) + 1)
            progressed = False
            for index, client in enumerate(self._clients):
                # Fill each connection's window; paho writes at once, as none of its callbacks is running.
                while position < allowed and self._sent[index] - self._acked[index] < job.window:
                    client.publish(topics[position], payloads[position], qos=wire.QOS)
                    self._sent[index] += 1
                    position += 1
                    progressed = True
                self._loop.flush(index)
            result.published = position
            self._loop.poll(0.0 if progressed else 0.005)
        for client in self._clients:
            client.disconnect()
        self._loop.drive_until(lambda: all(client.socket() is None for client in self._clients), 2.0)
        self._loop.close()
