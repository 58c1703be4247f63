"""The paho lifecycle of one connection, from CONNECT to its end, run on the uplink's publisher thread.

Each attempt uses a fresh paho client with ``reconnect_on_failure=False``: paho's own reconnect waits double
without jitter (a site's gates would reconnect in lock-step after a broker restart), and a reused client would
resend its own copies of in-flight messages on reconnect next to the ones re-read from the outbox. So a lost
connection ends the client; events that were in flight stay pending in SQLite and are published again on the next
connection (or by the next process after a restart). The Uplink waits between attempts (link.py).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from .. import wire
from ..outbox import PendingEvent
from .commands import CommandAnswer
from .health import UplinkHealth
from .pacing import RefusalPause
from .reports import Reporter
from .schedule import Acknowledged, Schedule, Send
from .session import Connack, ConsumerAck, Disconnected, Fact, FactRecorder, Hello, Puback, Session, Topics

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # TCP connect + TLS handshake, and again for the broker's CONNACK
GOODBYE_TIMEOUT_S = 2.0  # on stop: acknowledgement of the 'offline' messages, then the DISCONNECT
_IDLE_POLL_S = 1.0  # re-read the outbox this often even without wake(): another process may append
# Status, availability, telemetry (and again those three answering a hello): room in paho's window besides the events.
_CONTROL_MESSAGES = 7


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The broker, and how this gate introduces itself to it."""

    host: str
    port: int
    client_id: str
    keepalive_s: int
    session_expiry_s: int
    tls_context: ssl.SSLContext | None
    client_certificate_validity: tuple[float, float] | None  # to explain a refusal TLS may not report


class Stopping:
    """stop()'s request as the publisher thread sees it: from then on it only flushes what is pending, until the
    flush deadline."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self.flush_deadline = 0.0  # monotonic

    def request(self, flush_timeout_s: float) -> None:
        self.flush_deadline = time.monotonic() + flush_timeout_s
        self._requested.set()

    def clear(self) -> None:
        self._requested.clear()

    def is_set(self) -> bool:
        return self._requested.is_set()

    def flush_over(self, now: float) -> bool:
        return self._requested.is_set() and now >= self.flush_deadline


def _no_delay(client: mqtt.Client) -> None:
    """Send each MQTT packet at once. They are small and each waits for an answer (PUBACK, the
    consumer's acknowledgement); Nagle's algorithm would hold one back until the previous segment's
    TCP ACK: measured (bench_uplink) the end-to-end drain of a backlog was 4x slower with it."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # TLS sockets are too; a websocket wrapper is not and keeps its default
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection:
    """Runs connection attempts for one Uplink: ``attempt()`` is one paho client from CONNECT to its end."""

    def __init__(self, endpoint: Endpoint, topics: Topics, *, recorder: FactRecorder, stopping: Stopping,
                 health: UplinkHealth, schedule: Schedule, reporter: Reporter, pause: RefusalPause,
                 province_topics: list[str], commands: bool = False, flush: threading.Event | None = None) -> None:
        self._endpoint = endpoint
        self._topics = topics
        self._recorder = recorder
        self._stopping = stopping
        self._health = health
        self._schedule = schedule
        self._reporter = reporter
        self._pause = pause
        self._flush = flush or threading.Event()  # Uplink.flush_now(): publish now, whatever the refusal pause says
        # The hello at QoS 0: a gate that is away needs no queued hellos (its birth says everything anyway).
        self._subscriptions = [(topic, wire.QOS) for topic in province_topics]
        self._subscriptions += [(topics.ack, wire.QOS)] if schedule.end_to_end else []
        self._subscriptions.append((wire.PROVINCE_HELLO_TOPIC, 0))
        self._subscriptions += [(topics.command, wire.QOS)] if commands else []

    @property
    def _where(self) -> str:
        return f"{self._endpoint.host}:{self._endpoint.port}"

    def attempt(self) -> bool:
        """One connection, from connect to its end; True if it stayed up long enough to reset the backoff."""
        endpoint = self._endpoint
        client = self._new_client()
        self._discard_facts()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no annotations
        if endpoint.session_expiry_s:
            properties.SessionExpiryInterval = endpoint.session_expiry_s
        try:
            client.connect(endpoint.host, endpoint.port, keepalive=endpoint.keepalive_s, clean_start=False,
                           properties=properties)
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake/verification
            self._health.note_error(f"cannot connect to {self._where}: {exc}")
            return False
        _no_delay(client)
        client.loop_start()
        session = Session(client, opened=time.monotonic())
        try:
            self._serve(session)
        finally:
            if not session.closed:
                client.disconnect()
            client.loop_stop()
            self._health.set_connected(False)
        # A link that survived a keep-alive period is considered stable; a broker that accepts and
        # then drops connections at once keeps the backoff growing.
        return session.connected_at is not None and time.monotonic() - session.connected_at >= endpoint.keepalive_s

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._endpoint.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        # Room for the status and telemetry messages besides max_inflight events, so paho never
        # queues anything behind its own window: the in-flight count we keep is the one on the wire.
        client.max_inflight_messages_set(self._schedule.max_inflight + _CONTROL_MESSAGES)
        if self._endpoint.tls_context is not None:
            client.tls_set_context(self._endpoint.tls_context)
        client.will_set(self._topics.availability, wire.OFFLINE, qos=wire.QOS, retain=True)
        self._recorder.attach(client)
        return client

    def _serve(self, session: Session) -> None:
        """Act on facts and publish until this connection ends (or stop() has finished with it)."""
        kick, facts = self._recorder.kick, self._recorder.facts
        send = self._sender(session.client)
        while not session.closed:
            kick.wait(self._wait_time(session))
            kick.clear()  # before draining: a fact arriving after this sets it again
            now = time.monotonic()
            found = Acknowledged()
            while facts:
                self._handle_fact(session, facts.popleft(), found, now)
            self._schedule.record(found)
            self._health.pending.count_if_due()
            if session.closed:
                return
            if session.connected_at is None:
                if now - session.opened > CONNECT_TIMEOUT_S or self._stopping.flush_over(now):
                    if not self._stopping.is_set():
                        self._health.note_error(f"no CONNACK from {self._where} within {CONNECT_TIMEOUT_S:.0f} s")
                    return
                continue
            if self._flush.is_set():
                self._flush.clear()
                self._pause.lift()
            more = False
            if not self._pause.paused(now):
                more = self._schedule.publish(session.progress, send, now)
            self._reporter.report_if_due(session, now)
            if self._stopping.is_set() and (now >= self._stopping.flush_deadline
                                            or (not more and not session.progress.inflight)):
                self._goodbye(session)
                return

    def _sender(self, client: mqtt.Client) -> Send:
        topic = self._topics.checkin

        def send(event: PendingEvent) -> int | None:
            info = client.publish(topic, event.payload, qos=wire.QOS)
            return info.mid if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

        return send

    def _wait_time(self, session: Session) -> float:
        now = time.monotonic()
        # next_telemetry is inf without telemetry, hello_answer_at without a hello to answer
        wait = min(_IDLE_POLL_S, max(0.0, min(session.next_telemetry, session.hello_answer_at) - now))
        if self._pause.paused(now):
            wait = min(wait, self._pause.until - now)
        elif session.progress.throttled:
            wait = min(wait, self._schedule.bucket.next_in())
        if self._stopping.is_set():
            wait = min(wait, max(0.0, self._stopping.flush_deadline - now))
        return wait

    def _handle_fact(self, session: Session, fact: Fact, found: Acknowledged, now: float) -> None:
        if isinstance(fact, ConsumerAck):
            try:
                ack = wire.CheckinAck.from_json(fact.payload)
            except ValidationError as exc:
                self._health.note_error(f"ignored a malformed acknowledgement on {self._topics.ack}: "
                                        f"{exc.errors()[0]['msg']}")
                return
            self._schedule.consumer_acked(ack.event_ids, found)
            return
        if isinstance(fact, Hello):
            if session.connected_at is not None and not session.leaving:
                self._reporter.hello(session, fact.payload, now)
            return
        if isinstance(fact, CommandAnswer):
            self._answer_command(session, fact)
            return
        if fact.client is not session.client:
            return  # from a client this thread has already abandoned
        if isinstance(fact, Puback):
            self._handle_puback(session, fact, found, now)
        elif isinstance(fact, Connack):
            if fact.reason.is_failure:
                self._health.note_error(f"broker {self._where} refused the connection: {fact.reason}")
                return  # the broker closes the socket; the disconnect fact ends the session
            self._on_connected(session, now)
        else:
            self._on_disconnected(session, fact)

    def _answer_command(self, session: Session, answer: CommandAnswer) -> None:
        """Publish a command's answer on this connection (also while leaving: a restart's answer goes out before
        the goodbye's DISCONNECT), with the request's correlation data; without a connection, drop it."""
        if session.connected_at is None or session.closed:
            self._health.count_command("dropped")
            log.warning("answer to command %s (%s) dropped: not connected", answer.command, answer.outcome)
            return
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: no annotations
        if answer.correlation_data is not None:
            properties.CorrelationData = answer.correlation_data
        info = session.client.publish(answer.topic, answer.payload, qos=wire.QOS, properties=properties)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            session.control_mids.add(info.mid)
            self._health.count_command("answered")
        else:
            self._health.count_command("dropped")
            log.warning("answer to command %s (%s) dropped: %s", answer.command, answer.outcome,
                        mqtt.error_string(info.rc))

    def _discard_facts(self) -> None:
        """A new connection starts without the last one's facts; a command's answer among them is dropped, said."""
        facts = self._recorder.facts
        while facts:
            fact = facts.popleft()
            if isinstance(fact, CommandAnswer):
                self._health.count_command("dropped")
                log.warning("answer to command %s (%s) dropped: the connection was lost", fact.command, fact.outcome)

    def _handle_puback(self, session: Session, fact: Puback, found: Acknowledged, now: float) -> None:
        flight = session.progress.inflight.pop(fact.mid, None)
        if flight is None:
            session.control_mids.discard(fact.mid)
            if fact.reason.is_failure:
                self._health.note_error(f"broker refused a status or telemetry message: {fact.reason}")
            return
        if fact.reason.is_failure:
            self._health.note_refusal(str(fact.reason))
            self._schedule.refused(session.progress, flight)
            self._pause.refused(now)
        else:
            self._pause.accepted()
            self._schedule.accepted(flight, found)

    def _on_disconnected(self, session: Session, fact: Disconnected) -> None:
        session.closed = True
        if session.leaving:
            return
        if session.connected_at is not None:
            log.warning("MQTT connection to %s lost: %s", self._where, fact.reason)
            self._health.note_error(f"connection lost: {fact.reason}")
            return
        # With TLS 1.3 a broker refuses a client certificate (expired, unknown CA) after the
        # handshake, as an alert on the first read: there is no CONNACK, and paho tells only its log.
        error_client, error = self._recorder.first_error
        cause = error if error_client is session.client else str(fact.reason)
        validity = self._endpoint.client_certificate_validity
        if validity is not None and not validity[0] <= time.time() <= validity[1]:
            lapsed = "expired" if time.time() > validity[1] else "is not valid yet"
            cause += (f" (this gate's client certificate {lapsed}: valid {wire.iso_utc(validity[0])} "
                      f"to {wire.iso_utc(validity[1])})")
        self._health.note_error(f"{self._where} closed the connection before accepting it: {cause}")

    def _on_connected(self, session: Session, now: float) -> None:
        session.connected_at = now
        self._health.set_connected(True)
        log.info("MQTT connected to %s as %s", self._where, self._endpoint.client_id)
        self._schedule.begin(session.progress)
        # Subscribe before the birth: the broker handles a connection's packets in order, so whoever sees this
        # gate 'online' may send it a command at once (the subscription is in place).
        session.client.subscribe(self._subscriptions)
        session.control_mids.update(self._reporter.presence(session, wire.ONLINE))
        self._reporter.first_telemetry(session, now)

    def _goodbye(self, session: Session) -> None:
        """Retained 'offline' (acknowledged or timed out), then a clean DISCONNECT: no Last Will."""
        session.leaving = True
        goodbye = set(self._reporter.presence(session, wire.OFFLINE))
        session.control_mids.update(goodbye)
        found = Acknowledged()
        deadline = time.monotonic() + GOODBYE_TIMEOUT_S
        while goodbye & session.control_mids and not session.closed and time.monotonic() < deadline:
            self._await_facts(session, found, deadline)
        if not session.closed:
            session.client.disconnect()
            log.info("MQTT disconnected cleanly from %s", self._where)
            deadline = time.monotonic() + GOODBYE_TIMEOUT_S
            while not session.closed and time.monotonic() < deadline:
                self._await_facts(session, found, deadline)
        session.closed = True
        self._schedule.record(found)

    def _await_facts(self, session: Session, found: Acknowledged, deadline: float) -> None:
        kick, facts = self._recorder.kick, self._recorder.facts
        kick.wait(max(0.0, deadline - time.monotonic()))
        kick.clear()
        while facts:
            self._handle_fact(session, facts.popleft(), found, time.monotonic())
