"""Sending a signed command to one gate and waiting for its answer: MQTT 5 request/response on the provincial broker.

The sender subscribes to the gate's response topic (``wire.command_response_topic``) and waits for the SUBACK
before it publishes, so an answer cannot come before anyone listens; then it publishes the SignedCommand at QoS 1
on ``wire.command_topic`` with a ResponseTopic (the gate's own response topic: a gate answers nowhere else) and 16
random bytes of CorrelationData, and the command's remaining life as the Message Expiry Interval (the broker drops
it for a gate that comes back too late). The answer is the first CommandResponse with the same correlation data;
a site bridge speaks MQTT 3.1.1 (site-broker.conf.in) and carries no properties, so an answer without any is
matched by the command's nonce instead. No answer within the timeout is a ProvinceError that says so.

Only the operator and service roles may write command topics (brokerconf.render_provincial_acl): the broker
section must name an operator's certificate, or the service's own for the dashboard (commands.broker_cert_file).
The broker makes the certificate's CN the client id, so two senders with the same certificate at once take each
other's connection over: send one command at a time per certificate.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from qrgate import wire
from qrgate.wire import CommandResponse, GateCommand

from ..errors import ProvinceError
from .command_signing import OperatorKey, sign_command
from .fleet_listener import _configure as configure_client
from .settings import BrokerSettings

if TYPE_CHECKING:
    from .accounts import Accounts

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
_BROKER_TIMEOUT_S = 10.0  # CONNACK, SUBACK and PUBACK each


class _Exchange:
    """What paho's thread records for the sender's thread: acknowledgements by message id, and the answers."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.connack: ReasonCode | None = None
        self.disconnected: ReasonCode | None = None
        self.acks: dict[int, list[ReasonCode]] = {}  # SUBACK's and PUBACK's reason codes by message id
        self.answers: list[tuple[bytes | None, bytes]] = []  # (correlation data, payload)

    def record(self, update: Callable[[], None]) -> None:
        with self.changed:
            update()
            self.changed.notify_all()

    def wait(self, found: Callable[[], object], timeout_s: float) -> bool:
        with self.changed:
            self.changed.wait_for(lambda: bool(found()) or self.disconnected is not None, timeout_s)
            return bool(found())


class CommandSender:
    """One connection to the provincial broker that sends commands and returns their answers, one at a time."""

    def __init__(self, broker: BrokerSettings, *, client_id: str | None = None) -> None:
        self.host, self.port = broker.host, broker.port
        # A client id of its own: never the service's (broker.client_id), whose session it would take over.
        self.client_id = client_id or f"{broker.client_id[:40]}-command-{secrets.token_hex(4)}"
        self._keepalive_s = broker.keepalive_s
        self._exchange = _Exchange()
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()  # one command at a time
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        configure_client(self._client, broker)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    def connect(self) -> CommandSender:
        exchange = self._exchange
        try:
            self._client.connect(self.host, self.port, keepalive=self._keepalive_s, clean_start=True)
        except (OSError, ValueError) as exc:
            raise ProvinceError(f"cannot connect to the broker {self.host}:{self.port}: {exc}") from None
        self._client.loop_start()
        if not exchange.wait(lambda: exchange.connack is not None, _BROKER_TIMEOUT_S):
            self.close()
            raise ProvinceError(f"the broker {self.host}:{self.port} did not accept the connection: "
                                f"{exchange.disconnected or 'no CONNACK'}")
        if exchange.connack is not None and exchange.connack.is_failure:
            self.close()
            raise ProvinceError(f"the broker {self.host}:{self.port} refused the connection: {exchange.connack}")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> CommandSender:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, device_id: str, payload: bytes, *, nonce: str | None = None, expiry_s: int | None = None,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResponse:
        """Publish ``payload`` (a SignedCommand's JSON, or anything: the gate answers every payload) to
        ``device_id`` and return its answer; ``nonce`` matches an answer that lost its correlation data."""
        with self._lock:
            self._subscribe(wire.command_response_topic(device_id))
            correlation = secrets.token_bytes(16)
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: no annotations
            properties.ResponseTopic = wire.command_response_topic(device_id)
            properties.CorrelationData = correlation
            if expiry_s is not None:
                properties.MessageExpiryInterval = max(1, expiry_s)
            info = self._client.publish(wire.command_topic(device_id), payload, qos=wire.QOS, properties=properties)
            reason = self._acknowledged(info.rc, info.mid, f"the command to {device_id}")
            if reason.value == 0x10:  # No matching subscribers: nobody would ever deliver it
                raise ProvinceError(f"gate {device_id} is not subscribed to its command topic (an unknown gate, "
                                    "commands off in its [remote] section, or it never connected)")
            log.info("command sent to %s (%d bytes)", device_id, len(payload))
            response = self._await_answer(device_id, correlation, nonce, timeout_s)
        log.info("gate %s answered %s: %s", device_id, response.outcome, response.detail)
        return response

    def _subscribe(self, topic: str) -> None:
        if topic in self._subscribed:
            return
        result, mid = self._client.subscribe(topic, qos=wire.QOS)
        self._acknowledged(result, mid, f"the subscription to {topic}")
        self._subscribed.add(topic)

    def _acknowledged(self, rc: MQTTErrorCode | int, mid: int | None, what: str) -> ReasonCode:
        """The broker's reason code for message ``mid``; ProvinceError when it refused or never answered."""
        exchange = self._exchange
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ProvinceError(f"{what}: {mqtt.error_string(rc)}")
        if not exchange.wait(lambda: mid in exchange.acks, _BROKER_TIMEOUT_S):
            raise ProvinceError(f"{what}: no answer from the broker {self.host}:{self.port} within "
                                f"{_BROKER_TIMEOUT_S:g} s ({exchange.disconnected or 'still connected'})")
        with exchange.changed:
            reasons = exchange.acks.pop(mid)
        refused = next((reason for reason in reasons if reason.is_failure), None)
        if refused is not None:
            raise ProvinceError(f"{what}: the broker refused it: {refused} (does the broker section name an "
                                "operator's or the service's certificate?)")
        return reasons[0]

    def _await_answer(self, device_id: str, correlation: bytes, nonce: str | None,
                      timeout_s: float) -> CommandResponse:
        exchange = self._exchange
        found: list[CommandResponse] = []

        def matching() -> bool:
            while exchange.answers:
                data, payload = exchange.answers.pop(0)
                try:
                    response = CommandResponse.from_json(payload)
                except ValidationError:
                    log.warning("ignored a malformed answer on %s", wire.command_response_topic(device_id))
                    continue
                if data == correlation or (data is None and nonce is not None and response.nonce == nonce):
                    found.append(response)
                    return True
            return False

        deadline = time.monotonic() + timeout_s
        with exchange.changed:
            while not matching():
                left = deadline - time.monotonic()
                if left <= 0 or exchange.disconnected is not None:
                    lost = f"; the broker connection was lost: {exchange.disconnected}" if exchange.disconnected else ""
                    raise ProvinceError(f"no answer from gate {device_id} within {timeout_s:g} s (offline?){lost}")
                exchange.changed.wait(left)
        return found[0]

    # --- paho's thread ------------------------------------------------------------------------------------------

    def _on_connect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                    _props: object) -> None:
        self._exchange.record(lambda: setattr(self._exchange, "connack", reason))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                       _props: object) -> None:
        self._exchange.record(lambda: setattr(self._exchange, "disconnected", reason))

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, mid: int, reasons: list[ReasonCode],
                      _props: object) -> None:
        self._exchange.record(lambda: self._exchange.acks.__setitem__(mid, list(reasons)))

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode,
                    _props: object) -> None:
        self._exchange.record(lambda: self._exchange.acks.__setitem__(mid, [reason]))

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        data = getattr(message.properties, "CorrelationData", None)
        correlation = bytes(data) if isinstance(data, bytes | bytearray) else None
        self._exchange.record(lambda: self._exchange.answers.append((correlation, bytes(message.payload))))


def send_command(broker: BrokerSettings, key: OperatorKey, command: GateCommand, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResponse:
    """Sign ``command`` with ``key``, send it to its gate and return the gate's answer (refusals included);
    ProvinceError when the broker refuses it or the gate does not answer within ``timeout_s``."""
    signed = sign_command(key, command)
    expiry_s = int(command.expires_at - time.time())
    if expiry_s <= 0:
        raise ProvinceError(f"the command expired {-expiry_s} s ago, before it was sent")
    with CommandSender(broker) as sender:
        return sender.send(command.device_id, signed.to_json(), nonce=command.nonce, expiry_s=expiry_s,
                           timeout_s=timeout_s)


def send_command_audited(broker: BrokerSettings, key: OperatorKey, command: GateCommand, accounts: Accounts | None,
                         *, detail: dict[str, object] | None = None, remote: str | None = None,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandResponse:
    """``send_command``, written to the audit log first (``command``: who, which gate, what, its nonce and key) and
    its answer after (``command_answer``: the outcome, or ``no_answer``); a command whose audit line cannot be
    written is not sent. ``remote`` is the dashboard user's address; ``accounts`` None: no database, nothing
    audited (the caller says so)."""
    what: dict[str, object] = {"device_id": command.device_id, "command": command.command, "args": command.args,
                               "nonce": command.nonce, "kid": key.kid, "expires_at": wire.iso_utc(command.expires_at),
                               **(detail or {})}
    if accounts is not None:
        accounts.audit(command.operator, "command", what, remote)
    try:
        response = send_command(broker, key, command, timeout_s=timeout_s)
    except ProvinceError as exc:
        if accounts is not None:
            accounts.audit(command.operator, "command_answer", {"device_id": command.device_id,
                                                                "nonce": command.nonce, "outcome": "no_answer",
                                                                "detail": str(exc)[:500]}, remote)
        raise
    if accounts is not None:
        accounts.audit(command.operator, "command_answer", {"device_id": command.device_id, "nonce": command.nonce,
                                                            "outcome": response.outcome,
                                                            "detail": response.detail[:500]}, remote)
    return response
