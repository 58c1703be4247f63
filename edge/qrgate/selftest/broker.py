"""The self-test's broker check: one connection attempt as the uplink would make it, answered ok or failed."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from .. import wire
from ..config import MqttConfig
from ..errors import QrgateError
from ..uplink.connection import CONNECT_TIMEOUT_S
from ..uplink.tls import TlsSettings
from .result import CheckResult


class _Answer:
    """What paho's thread saw of the self-test's one connection attempt."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.connack: ReasonCode | None = None
        self.closed: ReasonCode | None = None  # disconnected before a CONNACK
        self.first_error = ""

    def on_connect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                   _props: object) -> None:
        self.connack = reason
        self.done.set()

    def on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                      _props: object) -> None:
        if self.connack is None:
            self.closed = reason
        self.done.set()

    def on_log(self, _client: mqtt.Client, _userdata: object, level: int, message: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and not self.first_error:
            self.first_error = message


def check_broker(mqtt_config: MqttConfig, *, device_id: str, skip: bool = False) -> CheckResult:
    """Connect to the broker as the uplink would (its TLS settings), as ``<client id>-selftest``: a client id of
    its own, so the daemon's session is not taken over; a clean session, so the broker keeps nothing of it."""
    if skip:
        return CheckResult("broker", True, "skipped (--skip-broker)")
    if not mqtt_config.enabled:
        return CheckResult("broker", True, "skipped (mqtt.enabled = false)")
    where = f"{mqtt_config.host}:{mqtt_config.port}"
    tls = TlsSettings.of(mqtt_config)
    try:
        context = tls.context() if tls is not None else None
    except QrgateError as exc:  # UplinkError naming the TLS file that cannot be used
        return CheckResult("broker", False, str(exc))
    client_id = f"{mqtt_config.client_id or device_id}-selftest"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    client.connect_timeout = CONNECT_TIMEOUT_S
    if context is not None:
        client.tls_set_context(context)
    answer = _Answer()
    client.on_connect, client.on_disconnect, client.on_log = answer.on_connect, answer.on_disconnect, answer.on_log
    started = time.monotonic()
    try:
        client.connect(mqtt_config.host, mqtt_config.port, keepalive=mqtt_config.keepalive_s, clean_start=True)
    except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake or verification
        return CheckResult("broker", False, f"cannot connect to {where}: {exc}{_certificate_note(tls)}")
    client.loop_start()
    try:
        answer.done.wait(CONNECT_TIMEOUT_S)
        ms = (time.monotonic() - started) * 1000
        client.disconnect()  # a clean DISCONNECT when connected; closes the socket in any case
    finally:
        client.loop_stop()
    mode = "plain MQTT" if tls is None else "mutual TLS" if tls.cert_file else "TLS"
    if answer.connack is not None:
        if answer.connack.is_failure:
            return CheckResult("broker", False, f"{where} refused the connection: {answer.connack}")
        return CheckResult("broker", True, f"connected to {where} as {client_id} ({mode}) in {ms:.0f} ms")
    if answer.closed is not None:
        cause = answer.first_error or str(answer.closed)
        return CheckResult("broker", False, f"{where} closed the connection before accepting it: {cause}"
                                            f"{_certificate_note(tls)}")
    return CheckResult("broker", False, f"no CONNACK from {where} within {CONNECT_TIMEOUT_S:g} s")


def _certificate_note(tls: TlsSettings | None) -> str:
    """Why a broker may refuse this gate that TLS does not always say: its client certificate's dates."""
    validity = tls.client_certificate_validity() if tls is not None else None
    if validity is None or validity[0] <= time.time() <= validity[1]:
        return ""
    lapsed = "expired" if time.time() > validity[1] else "is not valid yet"
    return (f" (this gate's client certificate {lapsed}: valid {wire.iso_utc(validity[0])} to "
            f"{wire.iso_utc(validity[1])})")
