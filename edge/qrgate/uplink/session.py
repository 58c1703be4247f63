"""One connection's state, and the facts paho's network thread records for the publisher thread.

paho's network loop runs on its own thread (``loop_start``), and its callbacks only record facts (CONNACK, PUBACK,
disconnect, a consumer's acknowledgement) in a deque and set the publisher's Event; the command runner's answers
(commands.py) arrive in the same deque. The publisher thread acts on them: paho is therefore never called from
inside its own callbacks, and a slow SQLite commit never stalls the network loop. Acknowledgements are facts rather
than inbound messages because none may be dropped, and they are recorded in the same round as PUBACKs and change
what is published next.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from .. import wire
from .commands import CommandAnswer, CommandRequest, request_of


@dataclass(frozen=True, slots=True)
class Topics:
    """A gate's own topics (wire.py has the scheme): what each of its sessions publishes and listens to."""

    checkin: str
    availability: str
    status: str
    telemetry: str
    ack: str
    command: str

    @classmethod
    def of(cls, device_id: str) -> Topics:
        return cls(wire.checkin_topic(device_id), wire.availability_topic(device_id), wire.status_topic(device_id),
                   wire.telemetry_topic(device_id), wire.ack_topic(device_id), wire.command_topic(device_id))


@dataclass(frozen=True, slots=True)
class Connack:
    client: mqtt.Client
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class Disconnected:
    client: mqtt.Client
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class Puback:
    client: mqtt.Client
    mid: int
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class ConsumerAck:
    payload: bytes  # valid whichever connection brought it: the consumer has the events


@dataclass(frozen=True, slots=True)
class Hello:
    """A message on ``wire.PROVINCE_HELLO_TOPIC``: the province's service (re)started and asks for our state."""

    payload: bytes


Fact = Connack | Disconnected | Puback | ConsumerAck | Hello | CommandAnswer


class FactRecorder:
    """paho's callbacks: each appends a fact and sets ``kick``, nothing more (they run on paho's thread).

    Province-wide messages go to ``inbound`` instead (its own bounded queue and thread), except the province's
    hello, a fact because the publisher thread answers it on its own connection; the consumer's
    acknowledgements on ``ack_topic`` become facts when end-to-end acknowledgements are on, and are otherwise a
    left-over subscription of the persistent session that nothing waits for. Messages on ``command_topic`` go to
    ``commands`` (the CommandRunner's queue, commands.py) with their MQTT 5 properties; without it (commands off,
    a subscription left in the persistent session) they are ignored, never queued beside the province's lists.
    """

    def __init__(self, kick: threading.Event, *, ack_topic: str, end_to_end: bool,
                 inbound: Callable[[str, bytes], None], command_topic: str | None = None,
                 commands: Callable[[CommandRequest], None] | None = None) -> None:
        self.facts: collections.deque[Fact] = collections.deque()
        self.kick = kick
        self.first_error: tuple[mqtt.Client | None, str] = (None, "")  # paho's first ERR log line of a client
        self._ack_topic = ack_topic
        self._end_to_end = end_to_end
        self._inbound = inbound
        self._command_topic = command_topic
        self._commands = commands

    def attach(self, client: mqtt.Client) -> None:
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_publish = self.on_publish
        client.on_message = self.on_message
        client.on_log = self.on_log

    def on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                   _props: object) -> None:
        self.facts.append(Connack(client, reason))
        self.kick.set()

    def on_log(self, client: mqtt.Client, _userdata: object, level: int, message: str) -> None:
        # The first error of a connection is its cause; later ones ("Client is not connected") are echoes.
        if level == mqtt.MQTT_LOG_ERR and self.first_error[0] is not client:
            self.first_error = (client, message)  # one reference assignment: safe across threads

    def on_disconnect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                      _props: object) -> None:
        self.facts.append(Disconnected(client, reason))
        self.kick.set()

    def on_publish(self, client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode, _props: object) -> None:
        self.facts.append(Puback(client, mid, reason))
        self.kick.set()

    def on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._ack_topic:
            if self._end_to_end:
                self.facts.append(ConsumerAck(bytes(message.payload)))
                self.kick.set()
            return
        if message.topic == wire.PROVINCE_HELLO_TOPIC:
            self.facts.append(Hello(bytes(message.payload)))
            self.kick.set()
            return
        if message.topic == self._command_topic:
            if self._commands is not None:
                self._commands(request_of(bytes(message.payload), getattr(message, "properties", None)))
            return
        self._inbound(message.topic, bytes(message.payload))


@dataclass(frozen=True, slots=True)
class InFlight:
    """A check-in event published on this connection and not yet answered by a PUBACK."""

    seq: int
    backlog: bool  # drained from the backlog: counts against the rate and the backlog's share of the window
    resend: bool  # sent again because the consumer's acknowledgement was overdue


@dataclass(slots=True)
class Progress:
    """How far publishing has got on one connection: the check-ins in flight and the cursors the schedule reads
    on from. A new connection starts from nothing but the outbox."""

    inflight: dict[int, InFlight] = field(default_factory=dict)  # message id -> check-in event
    backlog_mark: int = 0  # the outbox's last seq at CONNACK: events up to it are the backlog
    live_cursor: int = 0  # the newest live event published in this session
    backlog_cursor: int = 0  # the newest backlog event published (first time) in this session
    throttled: bool = False  # backlog events wait for the token bucket


@dataclass(slots=True)
class Session:
    """State of one connection, from CONNECT to its end."""

    client: mqtt.Client
    opened: float
    connected_at: float | None = None
    progress: Progress = field(default_factory=Progress)
    control_mids: set[int] = field(default_factory=set)  # status, availability, telemetry messages
    leaving: bool = False  # we sent (or are about to send) DISCONNECT ourselves
    closed: bool = False
    next_telemetry: float = math.inf
    hello_answer_at: float = math.inf  # monotonic: when to answer the province's hello (reports.py)
    reported_storage: tuple[bool, bool] | None = None  # (over limit, storage fault) as the last status said
