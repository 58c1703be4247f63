"""The MQTT uplink: publishes the outbox's pending events, oldest first, at least once.

Threads. paho's network loop runs on its own thread (``loop_start``) and its callbacks only record
facts (CONNACK, PUBACK, disconnect) in a deque and set an Event. One publisher thread of ours does
everything else: connects, reads the outbox, publishes, marks events delivered, backs off. paho is
therefore never called from inside its own callbacks, and a slow SQLite commit never stalls the
network loop.

Delivery. An event is marked delivered only when the broker's PUBACK carries a success reason code
(mosquitto answers 0x10 "No matching subscribers" when nobody listens: the broker has accepted it,
so that counts). A refused PUBACK (0x87 "Not authorized" when an ACL denies the topic) leaves the
event pending; publishing pauses with backoff and resumes from the oldest pending event.

Inbound. Province-wide topics (trust lists, revocation lists) are subscribed on every connection;
paho's ``on_message`` only queues the message (bounded), and a dispatcher thread of ours hands it to
its handler, so verifying a signed list never runs on paho's thread nor delays publishing.

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
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from . import wire
from .errors import OutboxError, UplinkError
from .outbox import Outbox

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0  # TCP connect + TLS handshake, and again for the broker's CONNACK
_GOODBYE_TIMEOUT_S = 2.0  # on stop: acknowledgement of the 'offline' messages, then the DISCONNECT
_IDLE_POLL_S = 1.0  # re-read the outbox this often even without wake(): another process may append
_INBOUND_QUEUE = 8  # province-wide messages waiting for their handler


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


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """A snapshot for status lines and telemetry. Counters are since this Uplink was created."""

    connected: bool
    sent: int  # check-in PUBLISHes written, resends included
    delivered: int  # acknowledged with a success reason code and marked delivered
    refused: int  # acknowledged with a failure reason code (the event stays pending)
    pending: int | None  # events in the outbox not yet delivered; None when the outbox cannot be read
    last_error: str | None  # the latest connection or storage problem (kept after recovery: see `connected`)
    last_refusal: str | None  # the broker's reason for the latest refusal, e.g. "Not authorized"


def full_jitter_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    Spreading the whole interval (not just a fraction) is what keeps many devices from retrying
    together after a shared outage.
    """
    ceiling = min(cap_s, base_s * 2 ** min(attempt, 32))
    return rng.uniform(0.0, ceiling)


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


@dataclass(slots=True)
class _Session:
    """State of one connection; a new connection starts from nothing but the outbox."""

    client: mqtt.Client
    opened: float
    connected_at: float | None = None
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> seq of check-in events
    goodbye_mids: set[int] = field(default_factory=set)  # 'offline' messages sent on stop
    leaving: bool = False  # we sent (or are about to send) DISCONNECT ourselves
    closed: bool = False


class Uplink:
    """Publishes pending check-in events to ``wire.checkin_topic(device_id)`` at QoS 1.

    ``start()`` returns at once; connection problems never raise into the caller, they show in
    ``stats.last_error`` and are retried forever. Configuration errors (TLS files) raise
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
        self._outbox = outbox
        self.device_id = device_id
        self.host = host
        self.port = port
        self.client_id = client_id or device_id
        self._tls_context = tls.context() if tls is not None else None
        self._username = username
        self._password = password
        self._keepalive = keepalive
        self._session_expiry_s = session_expiry_s
        self._max_inflight = max_inflight
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._software_version = software_version
        self._on_state = on_state
        self._subscriptions = dict(subscriptions or {})
        self._status_details = status_details
        # Retained province-wide messages: only the newest few matter, so a flood cannot grow memory.
        self._inbound: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=_INBOUND_QUEUE)
        self._inbound_kick = threading.Event()
        self._inbound_thread: threading.Thread | None = None
        self._checkin_topic = wire.checkin_topic(device_id)
        self._availability_topic = wire.availability_topic(device_id)
        self._status_topic = wire.status_topic(device_id)

        self._facts: collections.deque[_Connack | _Disconnected | _Puback] = collections.deque()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._flush_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        # Publishing pauses after a refused PUBACK until this monotonic time.
        self._refusals_in_a_row = 0
        self._publish_paused_until = 0.0
        # Acknowledged but not yet recorded (the outbox failed): never republished, retried to mark.
        self._acked_unrecorded: set[int] = set()

        self._stats_lock = threading.Lock()
        self._connected = False
        self._sent = self._delivered = self._refused = 0
        self._last_error: str | None = None
        self._last_refusal: str | None = None

    # --- the caller's side -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
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

        The clean DISCONNECT means the broker discards the Last Will. Events still pending stay in
        the outbox for the next start.
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

    def _on_disconnect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object) -> None:
        self._facts.append(_Disconnected(client, reason))
        self._kick.set()

    def _on_publish(self, client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode, _props: object) -> None:
        self._facts.append(_Puback(client, mid, reason))
        self._kick.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
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
        while not self._stopping.is_set():
            stable = False
            try:
                stable = self._connect_and_publish()
            except Exception:  # a bug here must not end publishing for the life of the daemon
                log.exception("MQTT uplink failed; reconnecting")
                self._note_error("internal error in the uplink (see the log)")
            failures = 0 if stable else failures + 1
            if self._stopping.is_set():
                break
            delay = full_jitter_delay(max(failures - 1, 0), self._reconnect_min_s, self._reconnect_max_s, self._rng)
            self._stopping.wait(delay)

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = _CONNECT_TIMEOUT_S
        # Room for the birth/goodbye messages besides max_inflight events, so paho never queues
        # anything behind its own window: the in-flight count we keep is the one on the wire.
        client.max_inflight_messages_set(self._max_inflight + 4)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        client.will_set(self._availability_topic, wire.OFFLINE, qos=wire.QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
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
            acked: list[int] = []
            while self._facts:
                self._handle_fact(session, self._facts.popleft(), acked, now)
            self._record_delivered(acked)
            if session.closed:
                return
            if session.connected_at is None:
                if now - session.opened > _CONNECT_TIMEOUT_S or (self._stopping.is_set() and now >= self._flush_deadline):
                    if not self._stopping.is_set():
                        self._note_error(f"no CONNACK from {self.host}:{self.port} within {_CONNECT_TIMEOUT_S:.0f} s")
                    return
                continue
            published = 0
            if now >= self._publish_paused_until:
                published = self._publish_pending(session)
            if self._stopping.is_set() and (now >= self._flush_deadline or (published == 0 and not session.inflight)):
                self._goodbye(session)
                return

    def _wait_time(self, session: _Session) -> float:
        wait = _IDLE_POLL_S
        now = time.monotonic()
        if self._publish_paused_until > now:
            wait = min(wait, self._publish_paused_until - now)
        if self._stopping.is_set():
            wait = min(wait, max(0.0, self._flush_deadline - now))
        return wait

    def _handle_fact(self, session: _Session, fact: _Connack | _Disconnected | _Puback, acked: list[int], now: float) -> None:
        if fact.client is not session.client:
            return  # from a client this thread has already abandoned
        if isinstance(fact, _Puback):
            seq = session.inflight.pop(fact.mid, None)
            if seq is None:
                session.goodbye_mids.discard(fact.mid)
                if fact.reason.is_failure:
                    self._note_error(f"broker refused a status message: {fact.reason}")
                return
            if fact.reason.is_failure:
                self._note_refusal(str(fact.reason))
                # One backoff step per publishing round: the other refusals of the same window
                # arrive while publishing is already paused and must not escalate it further.
                if now >= self._publish_paused_until:
                    self._publish_paused_until = now + full_jitter_delay(
                        self._refusals_in_a_row, self._reconnect_min_s, self._reconnect_max_s, self._rng
                    )
                    self._refusals_in_a_row += 1
            else:
                self._refusals_in_a_row = 0
                acked.append(seq)
        elif isinstance(fact, _Connack):
            if fact.reason.is_failure:
                self._note_error(f"broker {self.host}:{self.port} refused the connection: {fact.reason}")
                return  # the broker closes the socket; the disconnect fact ends the session
            session.connected_at = now
            self._set_connected(True)
            log.info("MQTT connected to %s:%d as %s", self.host, self.port, self.client_id)
            self._publish_presence(session.client, wire.ONLINE)
            if self._subscriptions:
                session.client.subscribe([(topic, wire.QOS) for topic in self._subscriptions])
        else:
            session.closed = True
            if session.connected_at is not None and not session.leaving:
                log.warning("MQTT connection to %s:%d lost: %s", self.host, self.port, fact.reason)
                self._note_error(f"connection lost: {fact.reason}")

    def _publish_presence(self, client: mqtt.Client, state: Literal["online", "offline"]) -> list[int]:
        """Retained availability string and status JSON; returns their message ids."""
        try:
            pending: int | None = self._outbox.pending_count()
        except OutboxError:
            pending = None
        details: Mapping[str, object] = {}
        if self._status_details is not None:
            try:
                details = self._status_details()
            except Exception:
                log.exception("status details failed")
        status = wire.DeviceStatus(
            device_id=self.device_id, state=state, time=wire.iso_utc(time.time()),
            software=self._software_version, pending=pending, **details,
        )
        mids = []
        for topic, payload in ((self._availability_topic, state.encode()), (self._status_topic, status.to_json())):
            mids.append(client.publish(topic, payload, qos=wire.QOS, retain=True).mid)
        return mids

    def _publish_pending(self, session: _Session) -> int:
        room = self._max_inflight - len(session.inflight)
        if room <= 0:
            return 0
        busy = set(session.inflight.values()) | self._acked_unrecorded
        try:
            rows = self._outbox.pending(limit=room + len(busy))
        except OutboxError as exc:
            self._note_error(str(exc))
            return 0
        published = 0
        for row in rows:
            if row.seq in busy:
                continue
            info = session.client.publish(self._checkin_topic, row.payload, qos=wire.QOS)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break  # the connection just dropped; its disconnect fact ends this session
            session.inflight[info.mid] = row.seq
            published += 1
            if published == room:
                break
        if published:
            with self._stats_lock:
                self._sent += published
        return published

    def _record_delivered(self, acked: list[int]) -> None:
        seqs = list(self._acked_unrecorded) + acked
        if not seqs:
            return
        try:
            self._outbox.mark_delivered(seqs)
        except OutboxError as exc:
            # Not recorded: keep them out of the publish window (the broker has them) and retry.
            self._acked_unrecorded.update(seqs)
            self._note_error(str(exc))
            return
        self._acked_unrecorded.clear()
        with self._stats_lock:
            self._delivered += len(seqs)

    def _goodbye(self, session: _Session) -> None:
        """Retained 'offline' (acknowledged or timed out), then a clean DISCONNECT: no Last Will."""
        session.leaving = True
        session.goodbye_mids.update(self._publish_presence(session.client, wire.OFFLINE))
        deadline = time.monotonic() + _GOODBYE_TIMEOUT_S
        acked: list[int] = []
        while session.goodbye_mids and not session.closed and time.monotonic() < deadline:
            self._kick.wait(max(0.0, deadline - time.monotonic()))
            self._kick.clear()
            while self._facts:
                self._handle_fact(session, self._facts.popleft(), acked, time.monotonic())
        self._record_delivered(acked)
        if session.closed:
            return
        session.client.disconnect()
        log.info("MQTT disconnected cleanly from %s:%d", self.host, self.port)
        deadline = time.monotonic() + _GOODBYE_TIMEOUT_S
        while not session.closed and time.monotonic() < deadline:
            self._kick.wait(max(0.0, deadline - time.monotonic()))
            self._kick.clear()
            while self._facts:
                self._handle_fact(session, self._facts.popleft(), acked, time.monotonic())
        session.closed = True

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
