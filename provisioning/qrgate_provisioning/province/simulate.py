"""The engine of ``qrgate-province simulate``: N simulated gates on one real broker, driven from one thread.

One thread, not one per client: paho's external-loop API over one selector (``simulate_io.ClientLoop``); what one
process cannot carry, several do (``simulate_pool``: each worker owns a share of the gates).

Each gate does what a real one does (``edge/qrgate/uplink``): it connects with its device id as client id, MQTT 5,
a persistent session and a last will ``offline`` (retained) on its availability topic; at CONNACK it says
``online`` (retained), publishes its retained status and subscribes to the province's hello; it sends telemetry
every heartbeat and check-ins at its share of the total rate. It answers a ``ProvinceHello`` with its availability,
status and telemetry after a random delay (a province's gates must not all answer the same hello at once). With
``offline_fraction`` F about that share of the gates is away at any moment: a gate drops by closing its socket
without DISCONNECT, so the broker publishes its will, and comes back after ``away_s``. At the end every connected
gate stops cleanly (status and availability ``offline``, then DISCONNECT). Connections are opened at most
``connect_window`` at a time: a storm of thousands of SYNs overflows the broker's listen backlog, and each SYN
the kernel drops costs its sender a second.

Control: ``request()`` (another thread) or a ``multiprocessing`` connection (another process) has the loop act:
drop a gate now, change its status, report the counters. Each answer carries the ``time.monotonic()`` of the act,
which the benchmark compares with when the fleet view showed it (CLOCK_MONOTONIC is one clock for every process
of the machine).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import queue
import random
import socket
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from qrgate import wire

from ..errors import ProvinceError
from .settings import BrokerSettings
from .simulate_gate import GateIdentity, SimulatedGate, fleet_identities, visitor_pool
from .simulate_io import ClientLoop, gate_client, password_of, raise_open_files, tls_context_of
from .simulate_settings import SimulationSettings, SimulationStats

log = logging.getLogger(__name__)

VISITORS = 20_000  # people in the pool the check-ins draw from: enough that a trace finds repeats, not too many
CONNECT_TIMEOUT_S = 10.0  # a CONNACK not come by then: the attempt is abandoned and retried
RECONNECT_S = (1.0, 5.0)  # a connection lost on its own (not dropped on purpose) is retried after this
FILES_BESIDE_GATES = 64  # descriptors besides one socket per gate: stdio, the selector, the control pipes...
_GOODBYE_WAIT_S = 5.0
Reply = dict[str, object]


class _Slot:
    """A gate with its MQTT client and where it is in its connection's life."""

    __slots__ = ("away_until", "client", "connecting_since", "gate", "generation", "hello_answered_at", "index",
                 "online")

    def __init__(self, index: int, gate: SimulatedGate, client: mqtt.Client) -> None:
        self.index, self.gate, self.client = index, gate, client
        self.online = False
        self.connecting_since: float | None = None
        self.away_until = 0.0  # dropped on purpose: not back before this (monotonic)
        self.generation = 0  # bumped at every connect: timers of an earlier connection are void
        self.hello_answered_at = -1e9


class GateSimulator:
    """N simulated gates on one broker; ``run()`` drives them until ``duration_s`` passed or ``stop()``."""

    def __init__(self, settings: SimulationSettings, broker: BrokerSettings, *,
                 identities: list[GateIdentity] | None = None, control: Connection | None = None) -> None:
        self.settings = settings
        self._broker = broker
        self._identities = identities if identities is not None else fleet_identities(
            settings.gates, settings.places, settings.prefix)
        self._rng = random.Random(settings.seed)
        self._visitors = visitor_pool(self._rng, VISITORS)
        self._control = control
        self._requests: queue.Queue[tuple[dict[str, object], queue.Queue[Reply]]] = queue.Queue()
        self._slots: list[_Slot] = []
        self._by_device: dict[str, _Slot] = {}
        self._online: list[_Slot] = []  # for a uniform random pick of a connected gate
        self._online_position: dict[int, int] = {}
        self._timers: list[tuple[float, int, str, int, int]] = []  # (due, tie, kind, slot index, generation)
        self._tie = 0
        self._to_connect: list[int] = []  # slot indices, the next one last
        self._connecting = 0
        self._stopping = threading.Event()
        self._started = 0.0
        self.stats = SimulationStats(gates=len(self._identities))
        self._create_gates()
        self._io = ClientLoop([slot.client for slot in self._slots])
        self._io.on_wake(self._serve_requests)

    # --- public -------------------------------------------------------------------------------------------------

    def run(self) -> SimulationStats:
        """Connect the gates and drive them; returns the counters once every gate has stopped."""
        self._started = time.monotonic()
        deadline = None if self.settings.duration_s is None else self._started + self.settings.duration_s
        last_tick = last_misc = self._started
        checkin_credit = churn_credit = 0.0
        try:
            raise_open_files(len(self._identities) + FILES_BESIDE_GATES)
            if self._control is not None:
                self._io.watch(self._control, self._serve_control)
            while not self._stopping.is_set() and (deadline is None or time.monotonic() < deadline):
                now = time.monotonic()
                elapsed, last_tick = now - last_tick, now
                self._open_connections(now)
                checkin_credit = self._checkins(checkin_credit + elapsed * self.settings.rate)
                churn_credit = self._churn(churn_credit + elapsed * self._drop_rate() * len(self._online))
                self._due_timers(now)
                if now - last_misc >= 1.0:
                    last_misc = now
                    self._keepalives(now)
                timeout = 0.01 if self.settings.rate else 0.2
                if self._timers:
                    timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
                self._io.poll(timeout)
        finally:
            try:
                self._goodbye()
            finally:
                self.stats.elapsed_s = round(time.monotonic() - self._started, 3)
                self._io.close()
        return self.stats

    def stop(self) -> None:
        """Ask the loop (from any thread) to stop the gates cleanly and return."""
        self._stopping.set()
        self._io.wake()

    def request(self, command: dict[str, object], timeout: float = 10.0) -> Reply:
        """Have the loop carry out ``command`` (see ``execute``) and return its answer; from another thread."""
        answer: queue.Queue[Reply] = queue.Queue(maxsize=1)
        self._requests.put((command, answer))
        self._io.wake()
        try:
            return answer.get(timeout=timeout)
        except queue.Empty:
            raise ProvinceError(
                f"the simulator did not carry out {command.get('command')!r} within {timeout} s") from None

    def last_seq(self, device_id: str) -> int:
        """The sequence number of the gate's latest check-in (0: none yet)."""
        return self._by_device[device_id].gate.seq

    def execute(self, command: dict[str, object]) -> Reply:
        """One control command, in the loop's thread:

        - ``{"command": "drop", "device_id": D, "away_s": S}``: close D's socket without DISCONNECT (the broker
          publishes its will); it comes back after S seconds (default: the settings' ``away_s``);
        - ``{"command": "status", "device_id": D, "config_hash": H}``: D publishes its status with that hash;
        - ``{"command": "stats"}``, ``{"command": "online"}`` (the connected device ids), ``{"command": "stop"}``.

        The answer has ``ok``, and ``at`` (``time.monotonic()`` right after the act) or ``error``."""
        name = command.get("command")
        if name == "stats":
            return {"ok": True, "stats": asdict(self.stats)}
        if name == "online":
            return {"ok": True, "device_ids": [slot.gate.device_id for slot in self._online]}
        if name == "stop":
            self._stopping.set()
            return {"ok": True}
        slot = self._by_device.get(str(command.get("device_id")))
        if slot is None:
            return {"ok": False, "error": f"no simulated gate {command.get('device_id')!r}"}
        if not slot.online:
            return {"ok": False, "error": f"{slot.gate.device_id} is not connected"}
        if name == "drop":
            away = command.get("away_s")
            self._drop(slot, float(away) if isinstance(away, int | float) else None)
            return {"ok": True, "at": time.monotonic()}
        if name == "status":
            slot.gate.config_hash = str(command.get("config_hash"))
            self._publish_status(slot)
            return {"ok": True, "at": time.monotonic()}
        return {"ok": False, "error": f"unknown command {name!r}"}

    # --- connections --------------------------------------------------------------------------------------------

    def _create_gates(self) -> None:
        tls_context, password = tls_context_of(self._broker), password_of(self._broker)
        now = time.time()
        for index, identity in enumerate(self._identities):
            client = gate_client(identity.device_id, index, self._broker, tls_context, password)
            client.on_socket_open = self._on_socket_open
            client.on_socket_close = self._on_socket_close
            client.on_connect = self._on_connect
            client.on_message = self._on_message
            slot = _Slot(index, SimulatedGate(identity, now), client)
            self._slots.append(slot)
            self._by_device[identity.device_id] = slot
        self._to_connect = list(reversed(range(len(self._slots))))

    def _open_connections(self, now: float) -> None:
        while self._to_connect and self._connecting < self.settings.connect_window and not self._stopping.is_set():
            slot = self._slots[self._to_connect.pop()]
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no annotations
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            slot.generation += 1
            try:
                slot.client.connect(self._broker.host, self._broker.port, keepalive=self._broker.keepalive_s,
                                    clean_start=False, properties=properties)
            except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake
                self.stats.connect_failures += 1
                if self.stats.connect_failures <= 3:
                    log.warning("simulate: %s cannot connect to %s:%d: %s", slot.gate.device_id, self._broker.host,
                                self._broker.port, exc)
                self._timer(now + self._rng.uniform(*RECONNECT_S), "connect", slot)
                continue
            slot.connecting_since = now
            self._connecting += 1
            self.stats.connects += 1

    def _on_socket_open(self, _client: mqtt.Client, index: int, sock: object) -> None:
        self._io.opened(index, sock)

    def _on_socket_close(self, _client: mqtt.Client, index: int, sock: object) -> None:
        self._io.closed(sock)
        slot = self._slots[index]
        if slot.connecting_since is not None:
            slot.connecting_since = None
            self._connecting -= 1
        now = time.monotonic()
        if slot.online:
            slot.online = False
            self._online_remove(slot)
            self.stats.connected -= 1
            if slot.away_until == 0.0 and not self._stopping.is_set():
                self.stats.lost += 1
        if not self._stopping.is_set():
            # Dropped on purpose: back when its time away is over; lost on its own: retried after a short backoff.
            back = slot.away_until if slot.away_until else now + self._rng.uniform(*RECONNECT_S)
            self._timer(back, "connect", slot)

    def _on_connect(self, client: mqtt.Client, index: int, _flags: object, reason: ReasonCode,
                    _props: object) -> None:
        slot = self._slots[index]
        if slot.connecting_since is not None:
            slot.connecting_since = None
            self._connecting -= 1
        if reason.is_failure:
            self.stats.refused += 1
            if self.stats.refused <= 3:
                log.warning("simulate: the broker refused %s: %s", slot.gate.device_id, reason)
            return  # the broker closes the connection; _on_socket_close schedules the retry
        slot.online, slot.away_until = True, 0.0
        self._online_add(slot)
        self.stats.connected += 1
        self.stats.peak_connected = max(self.stats.peak_connected, self.stats.connected)
        client.publish(wire.availability_topic(slot.gate.device_id), wire.ONLINE, qos=wire.QOS, retain=True)
        self._publish_status(slot)
        client.subscribe(wire.PROVINCE_HELLO_TOPIC, qos=0)  # QoS 0, as the gate: a queued hello is stale news
        jitter = self.settings.heartbeat_s * self._rng.uniform(0.0, 0.1)
        self._timer(time.monotonic() + jitter, "telemetry", slot)  # right after the birth, as a real gate

    def _on_message(self, client: mqtt.Client, index: int, message: mqtt.MQTTMessage) -> None:
        if message.topic != wire.PROVINCE_HELLO_TOPIC:
            return
        try:
            wire.ProvinceHello.from_json(bytes(message.payload))
        except ValueError:  # pydantic's ValidationError is a ValueError
            return
        slot = self._slots[index]
        now = time.monotonic()
        if now - slot.hello_answered_at >= self.settings.hello_every_s:
            slot.hello_answered_at = now
            self._timer(now + self._rng.uniform(0.0, self.settings.hello_jitter_s), "hello", slot)

    def _drop(self, slot: _Slot, away_s: float | None) -> None:
        """Close the link without DISCONNECT: the broker publishes the will. Back after ``away_s``."""
        low, high = self.settings.away_s
        slot.away_until = time.monotonic() + (away_s if away_s is not None else self._rng.uniform(low, high))
        self.stats.drops += 1
        self._close_abruptly(slot)

    def _close_abruptly(self, slot: _Slot) -> None:
        sock = slot.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already shut by the other side
                sock.shutdown(socket.SHUT_RDWR)
        slot.client.loop_read()  # paho reads the end of the stream now: the socket is closed and unregistered

    # --- traffic ------------------------------------------------------------------------------------------------

    def _publish_status(self, slot: _Slot) -> None:
        payload = slot.gate.status("online", time.time())
        slot.client.publish(wire.status_topic(slot.gate.device_id), payload, qos=wire.QOS, retain=True)
        self.stats.statuses += 1
        self._io.flush(slot.index)

    def _checkins(self, credit: float) -> float:
        """Publish ``int(credit)`` check-ins at random connected gates; the credit left (at most a second's worth,
        so a fleet with nobody connected does not build up a burst)."""
        count = int(credit)
        if not self._online:
            return min(credit, self.settings.rate)
        now = time.time()
        stats = self.stats
        for _ in range(count):
            slot = self._online[self._rng.randrange(len(self._online))]
            event = slot.gate.checkin(now, self._rng, self._visitors)
            slot.client.publish(wire.checkin_topic(event.device_id), event.to_json(), qos=wire.QOS)
            stats.count_checkin(event.verdict)
            self._io.flush(slot.index)
        return min(credit - count, self.settings.rate)

    def _drop_rate(self) -> float:
        """Drops per connected gate per second that keep about ``offline_fraction`` of the gates away."""
        fraction = self.settings.offline_fraction
        if fraction <= 0:
            return 0.0
        mean_away = sum(self.settings.away_s) / 2
        return fraction / ((1.0 - fraction) * max(mean_away, 0.1))

    def _churn(self, credit: float) -> float:
        for _ in range(int(credit)):
            if not self._online:
                break
            self._drop(self._online[self._rng.randrange(len(self._online))], None)
        return credit - int(credit)

    def _due_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _due, _tie, kind, index, generation = heapq.heappop(self._timers)
            slot = self._slots[index]
            if kind == "connect":
                idle = not slot.online and slot.client.socket() is None and not self._stopping.is_set()
                if idle and generation == slot.generation:
                    self.stats.reconnects += 1
                    self._to_connect.insert(0, index)  # behind the first connections still waiting
                continue
            if generation != slot.generation or not slot.online:
                continue  # a timer of an earlier connection
            if kind == "telemetry":
                self._publish_telemetry(slot)
                period = self.settings.heartbeat_s
                self._timer(now + period * self._rng.uniform(0.95, 1.05), "telemetry", slot)
            elif kind == "hello":
                client = slot.client
                client.publish(wire.availability_topic(slot.gate.device_id), wire.ONLINE, qos=wire.QOS, retain=True)
                self._publish_status(slot)
                self._publish_telemetry(slot)
                self.stats.hellos_answered += 1

    def _publish_telemetry(self, slot: _Slot) -> None:
        payload = slot.gate.telemetry(time.time(), self._rng)
        slot.client.publish(wire.telemetry_topic(slot.gate.device_id), payload, qos=wire.QOS)
        self.stats.telemetry += 1
        self._io.flush(slot.index)

    def _keepalives(self, now: float) -> None:
        for slot in self._slots:
            if slot.client.socket() is None:
                continue
            if slot.connecting_since is not None and now - slot.connecting_since > CONNECT_TIMEOUT_S:
                self.stats.connect_failures += 1
                self._close_abruptly(slot)  # no CONNACK: give up on this attempt, retry after a backoff
                continue
            slot.client.loop_misc()
            self._io.flush(slot.index)

    def _serve_requests(self) -> None:
        while True:
            try:
                command, answer = self._requests.get_nowait()
            except queue.Empty:
                return
            answer.put(self.execute(command))

    def _serve_control(self) -> None:
        assert self._control is not None
        try:
            while self._control.poll():
                self._control.send(self.execute(self._control.recv()))
        except (EOFError, OSError):  # the controlling process went away: stop with it
            self._io.unwatch(self._control)
            self._control = None
            self._stopping.set()

    def _timer(self, due: float, kind: str, slot: _Slot) -> None:
        self._tie += 1
        heapq.heappush(self._timers, (due, self._tie, kind, slot.index, slot.generation))

    def _online_add(self, slot: _Slot) -> None:
        self._online_position[slot.index] = len(self._online)
        self._online.append(slot)

    def _online_remove(self, slot: _Slot) -> None:
        position = self._online_position.pop(slot.index)
        last = self._online.pop()
        if last is not slot:
            self._online[position] = last
            self._online_position[last.index] = position

    # --- the end ------------------------------------------------------------------------------------------------

    def _goodbye(self) -> None:
        """Every connected gate stops cleanly, as a real one does: availability and status ``offline`` (retained,
        acknowledged by the broker), then DISCONNECT (so no will)."""
        self._stopping.set()
        infos: list[mqtt.MQTTMessageInfo] = []
        for slot in list(self._online):
            device_id, client = slot.gate.device_id, slot.client
            infos.append(client.publish(wire.availability_topic(device_id), wire.OFFLINE, qos=wire.QOS, retain=True))
            payload = slot.gate.status("offline", time.time())
            infos.append(client.publish(wire.status_topic(device_id), payload, qos=wire.QOS, retain=True))
            self._io.flush(slot.index)
        self._io.drive_until(lambda: all(info.is_published() for info in infos), _GOODBYE_WAIT_S)
        for slot in self._slots:
            if slot.client.socket() is not None:
                slot.client.disconnect()
                self._io.flush(slot.index)
        self._io.drive_until(lambda: all(slot.client.socket() is None for slot in self._slots), 2.0)
