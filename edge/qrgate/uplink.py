"""The MQTT uplink: publishes the outbox's pending events at least once; new ones first, the
backlog oldest first at a bounded rate.

Threads. paho's network loop runs on its own thread (``loop_start``) and its callbacks only record
facts (CONNACK, PUBACK, disconnect, a consumer's acknowledgement) in a deque and set an Event. One
publisher thread of ours does everything else: connects, reads the outbox, publishes, records
deliveries, backs off, reports. paho is therefore never called from inside its own callbacks, and a
slow SQLite commit never stalls the network loop.

Delivery. Without end-to-end acknowledgements an event is delivered when the broker's PUBACK
carries a success reason code (mosquitto answers 0x10 "No matching subscribers" when nobody
listens: the broker has accepted it, so that counts). With them (``end_to_end_ack``) that PUBACK
only makes it *published*: it stays in the outbox until the province's consumer acknowledges its
event id on ``wire.ack_topic`` (a ``wire.CheckinAck``; the persistent session keeps the
subscription, so acknowledgements sent while the gate is away wait at the broker), and it is
published again when no acknowledgement has come ``ack_timeout_s`` after its PUBACK. That wait
doubles, up to 16 times, while no acknowledgement at all arrives (a consumer that is down is not
hammered), and at most ``ack_window`` events wait for acknowledgement at a time, so the broker
queues a bounded number for an absent consumer and the rest wait on the gate. A refused PUBACK
(0x87 "Not authorized" when an ACL denies the topic) leaves the event pending in both modes;
publishing pauses with backoff and resumes from the oldest refused event.

Order and rate. At each connection the outbox's newest seq becomes the *backlog mark*. Events
stored up to it (an outage's backlog) and events whose acknowledgement is overdue are drained
oldest first, at most ``max_backlog_rate`` per second (a token bucket holding 100 ms worth) and in
at most ``max_inflight - max_inflight // 4`` slots of the in-flight window. Events stored after the
mark are *live*: published at once, ahead of the backlog, in the whole window. So a check-in made
after an outage does not wait behind ten thousand old ones, and a site's gates coming back together
do not flood the broker. Consumers order by seq (or time), never by arrival.

Inbound. Province-wide topics (trust lists, revocation lists, rule sets) are subscribed on every connection;
paho's ``on_message`` only queues the message (bounded, oldest dropped: only the newest list
matters), and a dispatcher thread of ours hands it to its handler, so verifying a signed list never
runs on paho's thread nor delays publishing. Acknowledgements take the other path, as facts for the
publisher thread: none may be dropped, and they are recorded in the same round as PUBACKs and
change what is published next.

Telemetry. Every ``telemetry_interval_s`` while connected the publisher sends ``wire.Telemetry``
(QoS 1, not retained; never queued while offline: the next one supersedes it) and, when the
outbox's storage condition changed since the last status (over its limit, a storage fault), the
retained ``wire.DeviceStatus`` again.

Connections. Each connection attempt uses a fresh paho client with ``reconnect_on_failure=False``:
paho's own reconnect waits double without jitter (a site's gates would reconnect in lock-step after
a broker restart), and a reused client would resend its own copies of in-flight messages on
reconnect next to the ones re-read from the outbox. So a lost connection ends the client; events
that were in flight stay pending in SQLite and are published again on the next connection (or by
the next process after a restart). The wait between attempts is exponential with full jitter.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import paho.mqtt.client as mqtt
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from . import wire
from .errors import OutboxError, UplinkError
from .outbox import Outbox, OutboxHealth, PendingEvent

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0  # TCP connect + TLS handshake, and again for the broker's CONNACK
_GOODBYE_TIMEOUT_S = 2.0  # on stop: acknowledgement of the 'offline' messages, then the DISCONNECT
_IDLE_POLL_S = 1.0  # re-read the outbox this often even without wake(): another process may append
_INBOUND_QUEUE = 8  # province-wide messages waiting for their handler
_CONTROL_MESSAGES = 4  # status, availability, telemetry: room in paho's window besides the events
_RESEND_BACKOFF_STEPS = 4  # the wait for a consumer's acknowledgement grows to ack_timeout_s x 2**4
_BUCKET_BURST_S = 0.1  # the backlog's token bucket holds this many seconds' worth of events


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS with server verification. ``ca_file`` None trusts the system's CAs; a client
    certificate and key (mutual TLS, one per device) go together."""

    ca_file: str | os.PathLike[str] | None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None

    def context(self) -> ssl.SSLContext:
        """An SSLContext that verifies the broker's certificate and host name; UplinkError names
        the file that cannot be used."""
        if (self.cert_file is None) != (self.key_file is None):
            raise UplinkError("TLS client certificate and key go together: give both cert_file and key_file or neither")
        for role, path in (("CA file", self.ca_file), ("client certificate", self.cert_file), ("client key", self.key_file)):
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise UplinkError(f"TLS {role} {path}: {exc.strerror or exc}") from exc
        try:
            context = ssl.create_default_context(cafile=os.fspath(self.ca_file) if self.ca_file else None)
        except ssl.SSLError as exc:
            raise UplinkError(f"TLS CA file {self.ca_file} holds no usable certificate: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                context.load_cert_chain(os.fspath(self.cert_file), os.fspath(self.key_file))  # type: ignore[arg-type]
            except ssl.SSLError as exc:
                raise UplinkError(
                    f"TLS client certificate {self.cert_file} / key {self.key_file}: not a matching PEM pair ({exc})"
                ) from exc
        return context

    def client_certificate_validity(self) -> tuple[float, float] | None:
        """The client certificate's notBefore/notAfter (epoch s), to explain a broker's refusal that
        TLS itself may not report (the alert can be lost when the broker closes at once)."""
        if self.cert_file is None:
            return None
        try:
            with open(self.cert_file, "rb") as pem:
                certificate = x509.load_pem_x509_certificate(pem.read())
        except (OSError, ValueError):
            return None  # context() has already named an unusable file
        return certificate.not_valid_before_utc.timestamp(), certificate.not_valid_after_utc.timestamp()


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """A snapshot for status lines and telemetry. Counters are since this Uplink was created."""

    connected: bool
    sent: int  # check-in PUBLISHes written, resends included
    delivered: int  # events that became delivered: PUBACK, or with end-to-end acks the consumer's acknowledgement
    refused: int  # acknowledged with a failure reason code (the event stays pending)
    pending: int | None  # events in the outbox not yet delivered; None when the outbox cannot be read
    last_error: str | None  # the latest connection or storage problem (kept after recovery: see `connected`)
    last_refusal: str | None  # the broker's reason for the latest refusal, e.g. "Not authorized"
    resent: int = 0  # of `sent`, resends after the consumer's acknowledgement was overdue
    awaiting_ack: int | None = None  # published, waiting for the consumer; None without end-to-end acks


def full_jitter_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    Spreading the whole interval (not just a fraction) is what keeps many devices from retrying
    together after a shared outage.
    """
    ceiling = min(cap_s, base_s * 2 ** min(attempt, 32))
    return rng.uniform(0.0, ceiling)


def _no_delay(client: mqtt.Client) -> None:
    """Send each MQTT packet at once. They are small and each waits for an answer (PUBACK, the
    consumer's acknowledgement); Nagle's algorithm would hold one back until the previous segment's
    TCP ACK: measured (bench_uplink) the end-to-end drain of a backlog was 4x slower with it."""
    sock = client.socket()
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TokenBucket:
    """At most ``rate`` events per second on average, ``burst`` at once; ``rate`` None: no limit.

    Hand-written: it is a dozen lines, and the rate-limit libraries on PyPI are built for asyncio
    or for decorating calls, not for "how many may I send now, and when may I send the next".
    """

    def __init__(self, rate: float | None, burst: float) -> None:
        if rate is not None and rate <= 0:
            raise UplinkError("the backlog rate must be positive (or unlimited)")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp: float | None = None

    def available(self, now: float) -> int:
        """Whole events that may be sent at ``now`` (monotonic seconds)."""
        if self.rate is None:
            return sys.maxsize
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return int(self._tokens + 1e-9)

    def take(self, count: int) -> None:
        if self.rate is not None:
            self._tokens -= count

    def next_in(self) -> float:
        """Seconds from the last ``available()`` until one more event may go."""
        if self.rate is None:
            return 0.0
        return max(0.0, (1.0 - self._tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class _Connack:
    client: mqtt.Client
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _Disconnected:
    client: mqtt.Client
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _Puback:
    client: mqtt.Client
    mid: int
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _ConsumerAck:
    payload: bytes  # valid whichever connection brought it: the consumer has the events


_Fact = _Connack | _Disconnected | _Puback | _ConsumerAck


@dataclass(frozen=True, slots=True)
class _InFlight:
    seq: int
    backlog: bool  # drained from the backlog: counts against the rate and the backlog's share of the window
    resend: bool  # sent again because the consumer's acknowledgement was overdue


@dataclass(slots=True)
class _Round:
    """What one pass over the facts found, recorded in the outbox together."""

    pubacked: list[int] = field(default_factory=list)  # seqs of check-ins the broker accepted
    consumer_acked: list[str] = field(default_factory=list)  # event ids the consumer committed


@dataclass(slots=True)
class _Session:
    """State of one connection; a new connection starts from nothing but the outbox."""

    client: mqtt.Client
    opened: float
    connected_at: float | None = None
    inflight: dict[int, _InFlight] = field(default_factory=dict)  # mid -> check-in event
    control_mids: set[int] = field(default_factory=set)  # status, availability, telemetry messages
    leaving: bool = False  # we sent (or are about to send) DISCONNECT ourselves
    closed: bool = False
    backlog_mark: int = 0  # the outbox's last seq at CONNACK: events up to it are the backlog
    live_cursor: int = 0  # the newest live event published in this session
    backlog_cursor: int = 0  # the newest backlog event published (first time) in this session
    throttled: bool = False  # backlog events wait for the token bucket
    next_telemetry: float = math.inf
    reported_storage: tuple[bool, bool] | None = None  # (over limit, storage fault) as the last status said


class Uplink:
    """Publishes pending check-in events to ``wire.checkin_topic(device_id)`` at QoS 1.

    ``start()`` returns at once; connection problems never raise into the caller, they show in
    ``stats.last_error`` and are retried forever. Configuration errors (TLS files, limits) raise
    UplinkError here, in the constructor.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        device_id: str,
        host: str,
        port: int,
        client_id: str | None = None,
        tls: TlsSettings | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        session_expiry_s: int = 3600,
        max_inflight: int = 20,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        software_version: str | None = None,
        on_state: Callable[[UplinkStats], None] | None = None,
        subscriptions: Mapping[str, Callable[[str, bytes], None]] | None = None,
        status_details: Callable[[], Mapping[str, object]] | None = None,
        end_to_end_ack: bool = False,
        ack_timeout_s: float = 30.0,
        ack_window: int = 500,
        max_backlog_rate: float | None = None,
        telemetry_interval_s: float | None = None,
        telemetry_details: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        if not device_id or any(c in device_id for c in "/+#"):
            raise UplinkError(f"device id {device_id!r} cannot be an MQTT topic level")
        if not host:
            raise UplinkError("MQTT broker host is empty")
        if not 1 <= port <= 65535:
            raise UplinkError(f"MQTT broker port {port} is out of range")
        if max_inflight < 1:
            raise UplinkError("max_inflight must be at least 1")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise UplinkError("reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s")
        if ack_timeout_s <= 0 or ack_window < 1:
            raise UplinkError("ack_timeout_s must be positive and ack_window at least 1")
        if telemetry_interval_s is not None and telemetry_interval_s <= 0:
            raise UplinkError("telemetry_interval_s must be positive (or None for no telemetry)")
        self._outbox = outbox
        self.device_id = device_id
        self.host = host
        self.port = port
        self.client_id = client_id or device_id
        self._tls_context = tls.context() if tls is not None else None
        self._client_certificate_validity = tls.client_certificate_validity() if tls is not None else None
        self._username = username
        self._password = password
        self._keepalive = keepalive
        self._session_expiry_s = session_expiry_s
        self._max_inflight = max_inflight
        self._backlog_share = max_inflight - max_inflight // 4  # the rest is kept for live events
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._software_version = software_version
        self._on_state = on_state
        self._subscriptions = dict(subscriptions or {})
        self._status_details = status_details
        self._end_to_end = end_to_end_ack
        self._ack_timeout_s = ack_timeout_s
        self._ack_window = ack_window
        self._bucket = TokenBucket(max_backlog_rate, (max_backlog_rate or 0) * _BUCKET_BURST_S)
        self._telemetry_interval_s = telemetry_interval_s
        self._telemetry_details = telemetry_details
        # Retained province-wide messages: only the newest few matter, so a flood cannot grow memory.
        self._inbound: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=_INBOUND_QUEUE)
        self._inbound_kick = threading.Event()
        self._first_client_error: tuple[mqtt.Client | None, str] = (None, "")  # paho's first ERR log line of a client
        self._inbound_thread: threading.Thread | None = None
        self._checkin_topic = wire.checkin_topic(device_id)
        self._availability_topic = wire.availability_topic(device_id)
        self._status_topic = wire.status_topic(device_id)
        self._ack_topic = wire.ack_topic(device_id)
        self._telemetry_topic = wire.telemetry_topic(device_id)

        self._facts: collections.deque[_Fact] = collections.deque()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._flush_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._started_at = time.monotonic()
        self._rng = random.Random()
        # Publishing pauses after a refused PUBACK until this monotonic time.
        self._refusals_in_a_row = 0
        self._publish_paused_until = 0.0
        # Acknowledged but not yet recorded (the outbox failed): never republished, retried to record.
        self._pubacked_unrecorded: set[int] = set()
        self._consumer_acked_unrecorded: set[str] = set()
        self._published_reset = end_to_end_ack  # see _reset_published
        # End-to-end acks: events waiting for the consumer, and how far the wait for it has backed off.
        self._awaiting = 0
        self._resend_steps = 0
        self._next_resend_step = 0.0

        self._stats_lock = threading.Lock()
        self._connected = False
        self._sent = self._resent = self._delivered = self._refused = 0
        self._last_error: str | None = None
        self._last_refusal: str | None = None

    # --- the caller's side -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="qrgate-uplink", daemon=True)
        self._thread.start()
        if self._subscriptions:
            self._inbound_thread = threading.Thread(target=self._dispatch_inbound, name="qrgate-inbound", daemon=True)
            self._inbound_thread.start()

    def wake(self) -> None:
        """Tell the publisher an event was appended (cheap: sets an Event; the capture loop calls it)."""
        self._kick.set()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Publish what is pending for up to ``flush_timeout_s``, send retained ``offline``, disconnect.

        The clean DISCONNECT means the broker discards the Last Will. Events still pending (and,
        with end-to-end acks, those awaiting the consumer) stay in the outbox for the next start.
        """
        thread = self._thread
        if thread is None:
            return
        self._flush_deadline = time.monotonic() + flush_timeout_s
        self._stopping.set()
        self._kick.set()
        thread.join(flush_timeout_s + _GOODBYE_TIMEOUT_S * 2 + _CONNECT_TIMEOUT_S)
        if thread.is_alive():
            log.warning("MQTT uplink did not stop within %.1f s", flush_timeout_s)
        self._thread = None
        if self._inbound_thread is not None:
            self._inbound_kick.set()
            self._inbound_thread.join(_GOODBYE_TIMEOUT_S)
            self._inbound_thread = None

    @property
    def stats(self) -> UplinkStats:
        try:
            pending: int | None = self._outbox.pending_count()
        except OutboxError:
            pending = None
        with self._stats_lock:
            return UplinkStats(
                connected=self._connected,
                sent=self._sent,
                delivered=self._delivered,
                refused=self._refused,
                pending=pending,
                last_error=self._last_error,
                last_refusal=self._last_refusal,
                resent=self._resent,
                awaiting_ack=self._awaiting if self._end_to_end else None,
            )

    def __enter__(self) -> "Uplink":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- paho callbacks: record facts only ------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object) -> None:
        self._facts.append(_Connack(client, reason))
        self._kick.set()

    def _on_log(self, client: mqtt.Client, _userdata: object, level: int, message: str) -> None:
        # The first error of a connection is its cause; later ones ("Client is not connected") are echoes.
        if level == mqtt.MQTT_LOG_ERR and self._first_client_error[0] is not client:
            self._first_client_error = (client, message)  # one reference assignment: safe across threads

    def _on_disconnect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object) -> None:
        self._facts.append(_Disconnected(client, reason))
        self._kick.set()

    def _on_publish(self, client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode, _props: object) -> None:
        self._facts.append(_Puback(client, mid, reason))
        self._kick.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._ack_topic:
            if self._end_to_end:  # otherwise a left-over subscription of the session: nothing waits for it
                self._facts.append(_ConsumerAck(bytes(message.payload)))
                self._kick.set()
            return
        self._inbound.append((message.topic, message.payload))
        self._inbound_kick.set()

    # --- the inbound dispatcher thread ----------------------------------------------------------

    def _dispatch_inbound(self) -> None:
        while True:
            self._inbound_kick.wait()
            self._inbound_kick.clear()
            while self._inbound:
                topic, payload = self._inbound.popleft()
                handler = self._subscriptions.get(topic)
                if handler is None:
                    continue
                try:
                    handler(topic, payload)
                except Exception:  # a handler's bug must not end the delivery of later lists
                    log.exception("handler for %s failed", topic)
            if self._stopping.is_set() and self._thread is None:
                return

    # --- the publisher thread -----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while self._should_connect():
            stable = False
            try:
                stable = self._connect_and_publish()
            except Exception:  # a bug here must not end publishing for the life of the daemon
                log.exception("MQTT uplink failed; reconnecting")
                self._note_error("internal error in the uplink (see the log)")
            failures = 0 if stable else failures + 1
            if not self._should_connect():
                break
            delay = full_jitter_delay(max(failures - 1, 0), self._reconnect_min_s, self._reconnect_max_s, self._rng)
            if self._stopping.is_set():
                time.sleep(min(delay, max(0.0, self._flush_deadline - time.monotonic())))
            else:
                self._stopping.wait(delay)

    def _should_connect(self) -> bool:
        """Always while running; while stopping, only to flush what is pending within the flush window
        (a broker that comes back just before a SIGTERM still gets the events answered meanwhile)."""
        if not self._stopping.is_set():
            return True
        if time.monotonic() >= self._flush_deadline:
            return False
        try:
            return self._outbox.pending_count() > 0
        except OutboxError:
            return False

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = _CONNECT_TIMEOUT_S
        # Room for the status and telemetry messages besides max_inflight events, so paho never
        # queues anything behind its own window: the in-flight count we keep is the one on the wire.
        client.max_inflight_messages_set(self._max_inflight + _CONTROL_MESSAGES)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        client.will_set(self._availability_topic, wire.OFFLINE, qos=wire.QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _connect_and_publish(self) -> bool:
        """One connection, from connect to its end; True if it stayed up long enough to reset the backoff."""
        client = self._new_client()
        self._facts.clear()
        properties = Properties(PacketTypes.CONNECT)
        if self._session_expiry_s:
            properties.SessionExpiryInterval = self._session_expiry_s
        try:
            client.connect(self.host, self.port, keepalive=self._keepalive, clean_start=False, properties=properties)
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake/verification
            self._note_error(f"cannot connect to {self.host}:{self.port}: {exc}")
            return False
        _no_delay(client)
        client.loop_start()
        session = _Session(client, opened=time.monotonic())
        try:
            self._serve(session)
        finally:
            if not session.closed:
                client.disconnect()
            client.loop_stop()
            self._set_connected(False)
        # A link that survived a keep-alive period is considered stable; a broker that accepts and
        # then drops connections at once keeps the backoff growing.
        return session.connected_at is not None and time.monotonic() - session.connected_at >= self._keepalive

    def _serve(self, session: _Session) -> None:
        """Act on facts and publish until this connection ends (or stop() has finished with it)."""
        while not session.closed:
            self._kick.wait(self._wait_time(session))
            self._kick.clear()  # before draining: a fact arriving after this sets it again
            now = time.monotonic()
            found = _Round()
            while self._facts:
                self._handle_fact(session, self._facts.popleft(), found, now)
            self._record(found)
            if session.closed:
                return
            if session.connected_at is None:
                if now - session.opened > _CONNECT_TIMEOUT_S or (self._stopping.is_set() and now >= self._flush_deadline):
                    if not self._stopping.is_set():
                        self._note_error(f"no CONNACK from {self.host}:{self.port} within {_CONNECT_TIMEOUT_S:.0f} s")
                    return
                continue
            more = False
            if now >= self._publish_paused_until:
                more = self._publish_round(session, now)
            self._report(session, now)
            if self._stopping.is_set() and (now >= self._flush_deadline or (not more and not session.inflight)):
                self._goodbye(session)
                return

    def _wait_time(self, session: _Session) -> float:
        now = time.monotonic()
        wait = min(_IDLE_POLL_S, max(0.0, session.next_telemetry - now))
        if self._publish_paused_until > now:
            wait = min(wait, self._publish_paused_until - now)
        elif session.throttled:
            wait = min(wait, self._bucket.next_in())
        if self._stopping.is_set():
            wait = min(wait, max(0.0, self._flush_deadline - now))
        return wait

    def _handle_fact(self, session: _Session, fact: _Fact, found: _Round, now: float) -> None:
        if isinstance(fact, _ConsumerAck):
            self._take_consumer_ack(fact.payload, found)
            return
        if fact.client is not session.client:
            return  # from a client this thread has already abandoned
        if isinstance(fact, _Puback):
            flight = session.inflight.pop(fact.mid, None)
            if flight is None:
                session.control_mids.discard(fact.mid)
                if fact.reason.is_failure:
                    self._note_error(f"broker refused a status or telemetry message: {fact.reason}")
                return
            if fact.reason.is_failure:
                self._note_refusal(str(fact.reason))
                # Publish it again, from the oldest refused event on (a resend stays overdue by itself).
                if not flight.backlog:
                    session.live_cursor = min(session.live_cursor, flight.seq - 1)
                elif not flight.resend:
                    session.backlog_cursor = min(session.backlog_cursor, flight.seq - 1)
                # One backoff step per publishing round: the other refusals of the same window
                # arrive while publishing is already paused and must not escalate it further.
                if now >= self._publish_paused_until:
                    self._publish_paused_until = now + full_jitter_delay(
                        self._refusals_in_a_row, self._reconnect_min_s, self._reconnect_max_s, self._rng
                    )
                    self._refusals_in_a_row += 1
            else:
                self._refusals_in_a_row = 0
                found.pubacked.append(flight.seq)
        elif isinstance(fact, _Connack):
            if fact.reason.is_failure:
                self._note_error(f"broker {self.host}:{self.port} refused the connection: {fact.reason}")
                return  # the broker closes the socket; the disconnect fact ends the session
            self._on_connected(session, now)
        else:
            session.closed = True
            if session.connected_at is not None and not session.leaving:
                log.warning("MQTT connection to %s:%d lost: %s", self.host, self.port, fact.reason)
                self._note_error(f"connection lost: {fact.reason}")
            elif session.connected_at is None and not session.leaving:
                # With TLS 1.3 a broker refuses a client certificate (expired, unknown CA) after the
                # handshake, as an alert on the first read: there is no CONNACK, and paho tells only its log.
                error_client, error = self._first_client_error
                cause = error if error_client is session.client else str(fact.reason)
                validity = self._client_certificate_validity
                if validity is not None and not validity[0] <= time.time() <= validity[1]:
                    lapsed = "expired" if time.time() > validity[1] else "is not valid yet"
                    cause += f" (this gate's client certificate {lapsed}: valid {wire.iso_utc(validity[0])} to {wire.iso_utc(validity[1])})"
                self._note_error(f"{self.host}:{self.port} closed the connection before accepting it: {cause}")

    def _on_connected(self, session: _Session, now: float) -> None:
        session.connected_at = now
        self._set_connected(True)
        log.info("MQTT connected to %s:%d as %s", self.host, self.port, self.client_id)
        self._reset_published()
        try:
            session.backlog_mark = self._outbox.last_seq
            if self._end_to_end:
                self._awaiting = self._outbox.awaiting_ack_count()
        except OutboxError as exc:
            self._note_error(str(exc))
        session.live_cursor = session.backlog_mark
        session.control_mids.update(self._publish_presence(session, wire.ONLINE))
        topics = list(self._subscriptions)
        if self._end_to_end:
            topics.append(self._ack_topic)
        if topics:
            session.client.subscribe([(topic, wire.QOS) for topic in topics])
        if self._telemetry_interval_s is not None:
            session.next_telemetry = now  # right after the birth: the backlog an outage left is news

    def _reset_published(self) -> None:
        """Without end-to-end acks, events published under them are sent again and delivered by
        their PUBACK; otherwise nothing would ever publish them (the consumer's ack is not awaited)."""
        if self._published_reset:
            return
        try:
            reset = self._outbox.forget_published()
        except OutboxError as exc:
            self._note_error(str(exc))
            return
        self._published_reset = True
        if reset:
            log.info("end-to-end acks are off: %d published events will be sent again", reset)

    def _take_consumer_ack(self, payload: bytes, found: _Round) -> None:
        try:
            ack = wire.CheckinAck.from_json(payload)
        except ValidationError as exc:
            self._note_error(f"ignored a malformed acknowledgement on {self._ack_topic}: {exc.errors()[0]['msg']}")
            return
        found.consumer_acked.extend(ack.event_ids)
        self._resend_steps = 0  # the consumer is there: overdue events are single losses, resent soon

    # --- publishing ---------------------------------------------------------------------------

    def _publish_round(self, session: _Session, now: float) -> bool:
        """Publish what the window, the acknowledgement window and the token bucket allow. True
        while events wait for room or tokens.

        With a backlog rate, live events go first and the backlog gets the tokens and its share of
        the window; without one nothing holds the backlog back, and everything goes oldest first.
        """
        session.throttled = False
        room = self._max_inflight - len(session.inflight)
        if room <= 0:
            return True
        busy = {flight.seq for flight in session.inflight.values()} | self._pubacked_unrecorded
        try:
            if self._bucket.rate is None:
                sent, more = self._publish_backlog(session, room, busy, now)
                return more or self._publish_live(session, room - sent, busy)[1]
            sent, more = self._publish_live(session, room, busy)
            if more:
                return True
            backlog_in_flight = sum(1 for flight in session.inflight.values() if flight.backlog)
            budget = min(room - sent, self._backlog_share - backlog_in_flight)
            if budget <= 0:
                return True
            return self._publish_backlog(session, budget, busy, now)[1]
        except OutboxError as exc:
            self._note_error(str(exc))
            return False

    def _publish_live(self, session: _Session, room: int, busy: set[int]) -> tuple[int, bool]:
        """Events stored since the connection began, oldest first: (how many sent, whether more wait)."""
        if room <= 0:
            return 0, True
        rows = [row for row in self._outbox.unpublished(limit=room + len(busy) + 1, after_seq=session.live_cursor)
                if row.seq not in busy]
        chosen = rows[:room]
        sent = self._send(session, ((row, False) for row in chosen), backlog=False)
        session.live_cursor = max([session.live_cursor] + [row.seq for row in chosen[:sent]])
        return sent, len(rows) > sent

    def _publish_backlog(self, session: _Session, budget: int, busy: set[int], now: float) -> tuple[int, bool]:
        """The backlog and overdue resends, oldest first, as the tokens allow: (sent, whether more wait)."""
        tokens = self._bucket.available(now)
        if tokens <= 0:
            session.throttled = True
            return 0, True
        candidates = self._backlog_candidates(session, budget + 1, busy)
        chosen = candidates[:min(budget, tokens)]
        sent = self._send(session, chosen, backlog=True)
        self._bucket.take(sent)
        session.backlog_cursor = max([session.backlog_cursor] + [row.seq for row, resend in chosen[:sent] if not resend])
        if any(resend for _, resend in chosen[:sent]) and now >= self._next_resend_step:
            # The wait grows at most once per wait: it measures the consumer's silence, not our rounds.
            self._next_resend_step = now + self._resend_wait_s()
            self._resend_steps = min(self._resend_steps + 1, _RESEND_BACKOFF_STEPS)
        session.throttled = len(candidates) > len(chosen) and tokens < budget
        return sent, len(candidates) > sent

    def _backlog_candidates(self, session: _Session, budget: int, busy: set[int]) -> list[tuple[PendingEvent, bool]]:
        """Up to ``budget`` backlog events, oldest first, each with whether it is a resend."""
        candidates: list[tuple[PendingEvent, bool]] = []
        new_allowed = budget
        if self._end_to_end:
            overdue = self._outbox.ack_overdue(limit=budget + len(busy), waited_s=self._resend_wait_s())
            candidates += [(row, True) for row in overdue if row.seq not in busy]
            awaiting_soon = self._awaiting + sum(1 for flight in session.inflight.values() if not flight.resend)
            new_allowed = min(budget, self._ack_window - awaiting_soon)
        if new_allowed > 0:
            backlog = self._outbox.unpublished(
                limit=new_allowed + len(busy), after_seq=session.backlog_cursor, through_seq=session.backlog_mark
            )
            candidates += [(row, False) for row in backlog if row.seq not in busy][:new_allowed]
        candidates.sort(key=lambda candidate: candidate[0].seq)
        return candidates[:budget]

    def _resend_wait_s(self) -> float:
        return self._ack_timeout_s * 2**self._resend_steps

    def _send(self, session: _Session, rows: Iterable[tuple[PendingEvent, bool]], *, backlog: bool) -> int:
        sent = resent = 0
        for row, resend in rows:
            info = session.client.publish(self._checkin_topic, row.payload, qos=wire.QOS)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break  # the connection just dropped; its disconnect fact ends this session
            session.inflight[info.mid] = _InFlight(row.seq, backlog, resend)
            sent += 1
            resent += resend
        if sent:
            with self._stats_lock:
                self._sent += sent
                self._resent += resent
        return sent

    def _record(self, found: _Round) -> None:
        """Write what the broker and the consumer acknowledged to the outbox; what cannot be written
        is kept (never republished meanwhile) and retried in the next round."""
        seqs = list(self._pubacked_unrecorded) + found.pubacked
        ids = list(self._consumer_acked_unrecorded) + found.consumer_acked
        if seqs:
            try:
                if self._end_to_end:
                    self._outbox.mark_published(seqs)
                else:
                    self._count_delivered(self._outbox.mark_delivered(seqs))
            except OutboxError as exc:
                self._pubacked_unrecorded.update(seqs)
                self._note_error(str(exc))
            else:
                self._pubacked_unrecorded.clear()
        if ids:
            try:
                self._count_delivered(self._outbox.mark_acknowledged(ids))
            except OutboxError as exc:
                self._consumer_acked_unrecorded.update(ids)
                self._note_error(str(exc))
            else:
                self._consumer_acked_unrecorded.clear()
        if self._end_to_end and (seqs or ids):
            try:
                awaiting = self._outbox.awaiting_ack_count()
            except OutboxError as exc:
                self._note_error(str(exc))
            else:
                with self._stats_lock:
                    self._awaiting = awaiting

    def _count_delivered(self, count: int) -> None:
        with self._stats_lock:
            self._delivered += count

    # --- status and telemetry -----------------------------------------------------------------

    def _publish_presence(self, session: _Session, state: Literal["online", "offline"]) -> list[int]:
        """Retained availability string and status JSON; returns their message ids."""
        status = self._status(session, state, self._outbox.health())
        mids = []
        for topic, payload in ((self._availability_topic, state.encode()), (self._status_topic, status)):
            mids.append(session.client.publish(topic, payload, qos=wire.QOS, retain=True).mid)
        return mids

    def _status(self, session: _Session, state: Literal["online", "offline"], health: OutboxHealth) -> bytes:
        fields: dict[str, object] = dict(
            device_id=self.device_id, state=state, time=wire.iso_utc(time.time()), software=self._software_version,
            pending=health.pending, outbox_over_limit=health.over_limit, storage_error=health.storage_error,
        )
        if self._status_details is not None:
            try:
                fields.update(self._status_details())
            except Exception:
                log.exception("status details failed")
        session.reported_storage = (health.over_limit, health.storage_error is not None)
        return wire.DeviceStatus.model_validate(fields).to_json()

    def _report(self, session: _Session, now: float) -> None:
        """Telemetry when it is due; the retained status again when the storage condition changed."""
        if now < session.next_telemetry or self._telemetry_interval_s is None:
            return
        session.next_telemetry = now + self._telemetry_interval_s
        health = self._outbox.health()
        client = session.client
        if (health.over_limit, health.storage_error is not None) != session.reported_storage:
            status = self._status(session, wire.ONLINE, health)
            session.control_mids.add(client.publish(self._status_topic, status, qos=wire.QOS, retain=True).mid)
        telemetry = self._telemetry(health)
        session.control_mids.add(client.publish(self._telemetry_topic, telemetry.to_json(), qos=wire.QOS).mid)

    def _telemetry(self, health: OutboxHealth) -> wire.Telemetry:
        with self._stats_lock:
            fields: dict[str, object] = dict(
                sent=self._sent, resent=self._resent, delivered=self._delivered, refused=self._refused,
                last_error=self._last_error, last_refusal=self._last_refusal,
            )
        oldest = health.oldest_pending_wall
        fields.update(
            device_id=self.device_id, time=wire.iso_utc(time.time()), uptime_s=int(time.monotonic() - self._started_at),
            pending=health.pending, awaiting_ack=health.awaiting_ack if self._end_to_end else None,
            oldest_pending_s=None if oldest is None else max(0, int(time.time() - oldest)),
            outbox_bytes=health.size_bytes, outbox_max_bytes=health.max_bytes, outbox_over_limit=health.over_limit,
            disk_free_bytes=health.disk_free_bytes, storage_error=health.storage_error,
        )
        if self._telemetry_details is not None:
            try:
                fields.update(self._telemetry_details())
            except Exception:
                log.exception("telemetry details failed")
        return wire.Telemetry.model_validate(fields)

    def _goodbye(self, session: _Session) -> None:
        """Retained 'offline' (acknowledged or timed out), then a clean DISCONNECT: no Last Will."""
        session.leaving = True
        goodbye = set(self._publish_presence(session, wire.OFFLINE))
        session.control_mids.update(goodbye)
        found = _Round()
        deadline = time.monotonic() + _GOODBYE_TIMEOUT_S
        while goodbye & session.control_mids and not session.closed and time.monotonic() < deadline:
            self._await_facts(session, found, deadline)
        if not session.closed:
            session.client.disconnect()
            log.info("MQTT disconnected cleanly from %s:%d", self.host, self.port)
            deadline = time.monotonic() + _GOODBYE_TIMEOUT_S
            while not session.closed and time.monotonic() < deadline:
                self._await_facts(session, found, deadline)
        session.closed = True
        self._record(found)

    def _await_facts(self, session: _Session, found: _Round, deadline: float) -> None:
        self._kick.wait(max(0.0, deadline - time.monotonic()))
        self._kick.clear()
        while self._facts:
            self._handle_fact(session, self._facts.popleft(), found, time.monotonic())

    # --- stats ----------------------------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        with self._stats_lock:
            changed = self._connected != connected
            self._connected = connected
        if changed and self._on_state is not None:
            try:
                self._on_state(self.stats)
            except Exception:
                log.exception("uplink on_state callback failed")

    def _note_error(self, message: str) -> None:
        with self._stats_lock:
            repeated = self._last_error == message
            self._last_error = message
        if not repeated:
            log.warning("MQTT uplink: %s", message)

    def _note_refusal(self, reason: str) -> None:
        with self._stats_lock:
            first = self._last_refusal != reason
            self._refused += 1
            self._last_refusal = reason
        if first:
            log.warning("broker refused a check-in event (%s); it stays in the outbox and is retried", reason)
