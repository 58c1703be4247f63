"""The daily report as a retained MQTT message (``wire.DAILY_REPORT_TOPIC``): whoever subscribes, now or
later (the national system's bridge, a district's screen), gets the latest report at once.

Published at QoS 1 and retained, and ``publish_report`` returns only after the broker's PUBACK: a report the
broker did not take is an error, not a log line. The per-place rows are left out of the message (the
non-complying places stay): site brokers bridge ``qrgate/v1/province/#`` to every site, and eighteen thousand
rows a day to each of them is megabytes nobody there reads. The full report is in the database, the CSV and the
PDF.

The client id is the service's with ``-report`` appended: the same id would make the broker disconnect the
running ``qrgate-province serve`` (MQTT allows one session per client id).
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from qrgate import wire

from ..errors import ProvinceError
from .report import DailyReport
from .settings import BrokerSettings


def publish_report(report: DailyReport, broker: BrokerSettings, *, timeout_s: float = 10) -> None:
    """Publish the report retained on ``wire.DAILY_REPORT_TOPIC`` and wait for the broker's PUBACK;
    ProvinceError naming the cause if the broker cannot be reached, refuses, or does not answer in time."""
    where = f"broker {broker.host}:{broker.port}"
    connected = threading.Event()
    published = threading.Event()
    outcome: dict[str, ReasonCode] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{broker.client_id}-report"[:64],
                         protocol=mqtt.MQTTv5)
    if broker.ca_file is not None:
        client.tls_set(ca_certs=str(broker.ca_file),
                       certfile=str(broker.cert_file) if broker.cert_file else None,
                       keyfile=str(broker.key_file) if broker.key_file else None)
    if broker.username is not None:
        client.username_pw_set(broker.username, _password(broker))

    def on_connect(_client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                   _props: object) -> None:
        outcome["connect"] = reason
        connected.set()

    def on_publish(_client: mqtt.Client, _userdata: object, _mid: int, reason: ReasonCode, _props: object) -> None:
        outcome["publish"] = reason
        published.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect_timeout = timeout_s
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive_s)
    except (OSError, ValueError) as exc:  # refused, unreachable, unknown host, TLS handshake
        raise ProvinceError(f"daily report not published: cannot connect to {where}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise ProvinceError(f"daily report not published: {where} did not answer the connection in "
                                f"{timeout_s:g} s")
        if outcome["connect"].is_failure:
            raise ProvinceError(f"daily report not published: {where} refused the connection: {outcome['connect']}")
        payload = report.without_places().to_json()
        info = client.publish(wire.DAILY_REPORT_TOPIC, payload, qos=wire.QOS, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ProvinceError(f"daily report not published to {where}: {mqtt.error_string(info.rc)}")
        if not published.wait(timeout_s):
            raise ProvinceError(f"daily report not published: {where} did not acknowledge it in {timeout_s:g} s")
        if outcome["publish"].is_failure:  # MQTT 5: e.g. "Not authorized" when the ACL does not let us write
            raise ProvinceError(f"daily report not published: {where} refused it on {wire.DAILY_REPORT_TOPIC}: "
                                f"{outcome['publish']}")
    finally:
        client.disconnect()
        client.loop_stop()


def _password(broker: BrokerSettings) -> str | None:
    if broker.password_file is None:
        return None
    try:
        return broker.password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProvinceError(f"broker.password_file: cannot read {broker.password_file}: {exc}") from exc
