"""The fleet listener: every gate's availability, status, telemetry and check-ins from the broker into a
``FleetState``, and the presence transitions it yields into PostgreSQL.

Subscriptions. Plain (not shared) subscriptions to ``wire.ALL_AVAILABILITY`` and ``wire.ALL_STATUS`` at QoS 1
(retained: the broker hands over what every gate last said as soon as we subscribe) and to ``ALL_TELEMETRY``
and ``ALL_CHECKINS`` at QoS 0: the consumer, a separate process with its own shared subscription, stores every
check-in; the fleet only needs the latest, and a clean session, so nothing queues for it while it is away.

Hello. Once the broker has granted the subscriptions (so no answer can be missed), on every connection, the
listener publishes a ``wire.ProvinceHello`` on ``wire.PROVINCE_HELLO_TOPIC`` (not retained). Every gate answers
with its availability, status and telemetry within its ``mqtt.hello_jitter_s``: a restarted dashboard is
never blank, and a retained "online" left by a gate that died without a will is found out (it does not answer).

Presence. A thread of ours, every second, runs the fleet's sweep (stale gates become offline) and writes the
transitions and "heard" rows to ``gate_presence``/``gate_heard``. If PostgreSQL is unreachable they are kept
(up to a bound) and written when it is back; the cause is logged once. It also hands newly seen gates to
``on_new_gate`` (the registry files them), outside the fleet's lock and never on paho's network thread.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from qrgate import wire

from ..errors import ProvinceError
from . import presence
from .fleet import FleetState, GateView
from .settings import BrokerSettings

if TYPE_CHECKING:
    from .db import Database

log = logging.getLogger(__name__)

SUBSCRIPTIONS = [(wire.ALL_AVAILABILITY, 1), (wire.ALL_STATUS, 1), (wire.ALL_TELEMETRY, 0), (wire.ALL_CHECKINS, 0)]
SWEEP_EVERY_S = 1.0
MAX_BUFFERED = 200_000  # presence rows kept through a database outage (about 18,000 gates for ~1.5 h of heard rows)
_RATE_WINDOW_S = 10  # messages per second over this many whole seconds


class MessageRate:
    """Messages per second over the last few whole seconds (paho's thread counts, readers read)."""

    def __init__(self, window_s: int = _RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._lock = threading.Lock()
        self._buckets: collections.deque[list[int]] = collections.deque()  # [second, count]

    def count(self, now: float) -> None:
        second = int(now)
        with self._lock:
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += 1
            else:
                self._buckets.append([second, 1])
                while self._buckets and self._buckets[0][0] <= second - self._window_s:
                    self._buckets.popleft()

    def per_second(self, now: float) -> float:
        """Over the window's whole seconds before the current one."""
        current = int(now)
        with self._lock:
            total = sum(count for second, count in self._buckets if current - self._window_s <= second < current)
        return total / self._window_s


class FleetListener:
    """Keeps ``fleet`` up to date from the broker ``broker`` describes (see the module's text).

    ``start()`` returns at once; paho connects and reconnects in the background, and every connection says hello
    again. ``client_id`` overrides ``broker.client_id`` (a second process must not take over the service's
    session); ``database`` None keeps no presence rows.
    """

    def __init__(self, broker: BrokerSettings, fleet: FleetState, *, database: Database | None = None,
                 on_new_gate: Callable[[GateView], None] | None = None, client_id: str | None = None,
                 sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.fleet = fleet
        self.host, self.port = broker.host, broker.port
        self.client_id = client_id or broker.client_id
        self._keepalive_s = broker.keepalive_s
        self._database = database
        self._on_new_gate = on_new_gate
        self._sweep_every_s = sweep_every_s
        self.rate = MessageRate()
        self.hellos_sent = 0
        self.hello_refused: str | None = None  # the broker's reason, when it refused our hello
        self.last_error: str | None = None
        self._ready = threading.Event()  # connected, subscribed, hello sent
        self._stopping = threading.Event()
        self._hello_mids: set[int] = set()
        self._thread: threading.Thread | None = None
        self._transitions: list[presence.Transition] = []
        self._heard: list[tuple[str, dt.datetime]] = []
        self._new_gates: list[GateView] = []
        self._store_failing = False
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        _configure(self._client, broker)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FleetListener:
        self._stopping.clear()
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s, clean_start=True)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="qrgate-fleet-presence", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Disconnect, then store what is left (one last try)."""
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._ready.clear()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def wait_connected(self, timeout: float) -> bool:
        """True once connected, subscribed and hello sent (False after ``timeout`` seconds without)."""
        return self._ready.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def unstored(self) -> int:
        """Presence rows waiting for the database (more than a round's worth: it is unreachable)."""
        return len(self._transitions) + len(self._heard)

    @property
    def messages_per_s(self) -> float:
        return self.rate.per_second(time.time())

    def __enter__(self) -> FleetListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- paho's thread -----------------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                    _props: object) -> None:
        if reason.is_failure:
            self._note_error(f"broker {self.host}:{self.port} refused the connection: {reason}")
            return
        log.info("fleet: connected to %s:%s as %s", self.host, self.port, self.client_id)
        client.subscribe(SUBSCRIPTIONS)

    def _on_subscribe(self, client: mqtt.Client, _userdata: object, _mid: int, reasons: list[ReasonCode],
                      _props: object) -> None:
        refused = [f"{topic}: {reason}" for (topic, _qos), reason in zip(SUBSCRIPTIONS, reasons, strict=False)
                   if reason.is_failure]
        if refused:
            self._note_error("the broker refused subscriptions: " + "; ".join(refused))
        hello = wire.ProvinceHello(service=self.client_id[:64], time=wire.iso_utc(time.time()))
        info = client.publish(wire.PROVINCE_HELLO_TOPIC, hello.to_json(), qos=1, retain=False)
        self._hello_mids.add(info.mid)
        self.hellos_sent += 1
        self._ready.set()

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode,
                    _props: object) -> None:
        if mid not in self._hello_mids:
            return
        self._hello_mids.discard(mid)
        if reason.is_failure and self.hello_refused != str(reason):
            self.hello_refused = str(reason)
            log.warning("fleet: the broker refused our hello (%s): gates will not re-publish their state, only "
                        "what the broker retained is known (does this certificate have the service role?)", reason)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                       _props: object) -> None:
        self._ready.clear()
        if not self._stopping.is_set():
            self._note_error(f"connection to {self.host}:{self.port} lost: {reason}")

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        self.rate.count(now)
        self.fleet.apply(message.topic, bytes(message.payload), now, retained=bool(message.retain))

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("fleet: %s", message)
        self.last_error = message

    # --- the presence thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(self._sweep_every_s):
            self._round()
        self._round()  # what the last messages brought

    def _round(self) -> None:
        try:
            self.fleet.sweep(time.time())
            self._store()
            self._file_new_gates()
        except Exception:  # a bug here must not end presence for the life of the service
            log.exception("fleet: presence round failed")

    def _store(self) -> None:
        self._transitions += self.fleet.take_transitions()
        self._heard += self.fleet.take_heard()
        if self._database is None:
            self._transitions, self._heard = [], []
            return
        if not self._transitions and not self._heard:
            return
        self._bound()
        import psycopg  # installed: the Database in hand needs it

        try:
            with self._database.connection() as connection:
                presence.record_transitions(connection, self._transitions)
                presence.record_heard(connection, self._heard)
        except psycopg.Error as exc:  # the pool's timeout is one too: kept, and tried again next round
            if not self._store_failing:
                log.warning("fleet: cannot store gate presence (kept, retried every %.0f s): %s",
                            self._sweep_every_s, exc)
            self._store_failing = True
            return
        if self._store_failing:
            log.info("fleet: storing gate presence again (%d transitions, %d heard rows caught up)",
                     len(self._transitions), len(self._heard))
        self._store_failing = False
        self._transitions, self._heard = [], []

    def _bound(self) -> None:
        """Through a long outage, drop the oldest "heard" rows first (transitions matter more), then transitions."""
        excess = len(self._heard) + len(self._transitions) - MAX_BUFFERED
        if excess <= 0:
            return
        dropped_heard = min(excess, len(self._heard))
        del self._heard[:dropped_heard]
        del self._transitions[:excess - dropped_heard]
        log.warning("fleet: the database has been unreachable too long: dropped the %d oldest presence rows", excess)

    def _file_new_gates(self) -> None:
        self._new_gates += self.fleet.take_new_gates()
        if self._on_new_gate is None:
            self._new_gates = []
            return
        failed: list[GateView] = []
        for view in self._new_gates:
            try:
                self._on_new_gate(view)
            except Exception as exc:  # noqa: BLE001 - the registry's fault must not stop presence; retried
                if not failed:
                    log.warning("fleet: filing new gate %s failed (retried): %s", view.device_id, exc)
                failed.append(view)
        self._new_gates = failed


def _configure(client: mqtt.Client, broker: BrokerSettings) -> None:
    """TLS and credentials from the broker section, as the consumer does; ProvinceError names what is wrong."""
    if broker.ca_file is not None:
        try:
            client.tls_set(ca_certs=str(broker.ca_file),
                           certfile=str(broker.cert_file) if broker.cert_file else None,
                           keyfile=str(broker.key_file) if broker.key_file else None)
        except (OSError, ValueError) as exc:
            raise ProvinceError(f"broker TLS files ({broker.ca_file}, {broker.cert_file}): {exc}") from exc
    elif broker.cert_file is not None or broker.key_file is not None:
        raise ProvinceError("broker.cert_file and broker.key_file need broker.ca_file (TLS)")
    if broker.username is not None:
        password = None
        if broker.password_file is not None:
            try:
                password = broker.password_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ProvinceError(f"broker.password_file {broker.password_file}: cannot read: {exc}") from exc
        client.username_pw_set(broker.username, password)
