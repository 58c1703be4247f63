"""The gate's answer to the province's hello (uplink.reports): availability, status and telemetry again after a
random delay, at most once per 30 s, malformed hellos counted; the board figures telemetry gained; and the
provincial broker's ACL that lets only the province's service say hello. Real Mosquitto, real outbox."""

from __future__ import annotations

import argparse
import random
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from faults import LOOPBACK, TestPki, gate_uplink, start_provincial_broker
from mqtt_helpers import DEVICE_ID, Subscriber, uplink_for, wait_until
from qrgate import wire
from qrgate.outbox import Outbox
from qrgate.uplink.health import UplinkHealth
from qrgate.uplink.reports import CPU_THERMAL_ZONE, CounterRate, Reporter, disk_total_bytes, read_cpu_temp_c
from qrgate.uplink.session import Session, Topics
from qrgate_provisioning.brokerconf import ProvincialBroker, TlsFiles, render_provincial_acl
from qrgate_provisioning.commands import broker_config
from qrgate_provisioning.province.fleet import FleetState
from qrgate_provisioning.province.fleet_listener import FleetListener
from qrgate_provisioning.province.settings import BrokerSettings, FleetSettings
from qrgate_tools.broker import MosquittoBroker
from test_broker_configs import user_blocks

STATUS = wire.status_topic(DEVICE_ID)
AVAILABLE = wire.availability_topic(DEVICE_ID)
TELEMETRY = wire.telemetry_topic(DEVICE_ID)


def hello() -> bytes:
    return wire.ProvinceHello(service="qrgate-province", time=wire.iso_utc(time.time())).to_json()


def say(host: str, port: int, payload: bytes, *, client_id: str = "hello-sayer", **tls: str) -> str:
    """Publish ``payload`` on the hello topic at QoS 1; the broker's PUBACK reason."""
    reasons: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if tls:
        client.tls_set(**tls)
    client.on_publish = lambda _c, _u, _mid, reason, _p: (reasons.append(str(reason)), done.set())
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(wire.PROVINCE_HELLO_TOPIC, payload, qos=1)
        assert done.wait(10), "no PUBACK for the hello"
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


def first_report_seen(subscriber: Subscriber, topic: str = TELEMETRY) -> None:
    """The first telemetry follows the gate's SUBSCRIBE on the same connection: once it is here, so is the
    gate's subscription to the hello."""
    wait_until(lambda: subscriber.on(topic), 10, "the gate's first telemetry")


def test_a_hello_is_answered_with_availability_status_and_telemetry(broker: MosquittoBroker, outbox: Outbox) -> None:
    with (
        Subscriber(broker.host, broker.port, [STATUS, AVAILABLE, TELEMETRY]) as subscriber,
        uplink_for(outbox, broker, telemetry_interval_s=3600, hello_jitter_s=0.2) as uplink,
    ):
        first_report_seen(subscriber)
        assert (len(subscriber.on(STATUS)), len(subscriber.on(AVAILABLE))) == (1, 1)  # the birth
        assert say(broker.host, broker.port, hello()) in ("Success", "No matching subscribers")
        wait_until(lambda: len(subscriber.on(TELEMETRY)) == 2 and len(subscriber.on(STATUS)) == 2
                   and len(subscriber.on(AVAILABLE)) == 2, 10, "the answer to the hello")
        assert uplink.stats.hellos_answered == 1
    status = wire.DeviceStatus.from_json(subscriber.on(STATUS)[1].payload)
    assert (status.device_id, status.state) == (DEVICE_ID, "online")
    assert subscriber.on(AVAILABLE)[1].payload == b"online"
    report = wire.Telemetry.from_json(subscriber.on(TELEMETRY)[1].payload)
    assert report.disk_total_bytes is not None and report.disk_free_bytes is not None
    assert report.disk_total_bytes >= report.disk_free_bytes > 0
    if read_cpu_temp_c() is None:
        assert report.cpu_temp_c is None
    else:
        assert report.cpu_temp_c is not None and -40 < report.cpu_temp_c < 130


def test_a_second_hello_within_30_s_is_not_answered_and_malformed_ones_are_counted(
        broker: MosquittoBroker, outbox: Outbox) -> None:
    with (
        Subscriber(broker.host, broker.port, [STATUS, TELEMETRY]) as subscriber,
        uplink_for(outbox, broker, telemetry_interval_s=3600, hello_jitter_s=0.0) as uplink,
    ):
        first_report_seen(subscriber)
        say(broker.host, broker.port, hello())
        wait_until(lambda: uplink.stats.hellos_answered == 1, 10, "the first answer")
        say(broker.host, broker.port, hello())
        for garbage in (b"not json", b'{"v": 1}', b'{"service": "' + b"x" * 65 + b'", "time": "now"}'):
            say(broker.host, broker.port, garbage)
        wait_until(lambda: uplink.stats.hellos_malformed == 3, 10, "the malformed hellos counted")
        stats = uplink.stats
        assert (stats.hellos_answered, stats.hellos_ignored) == (1, 1)
        assert len(subscriber.on(STATUS)) == 2 and len(subscriber.on(TELEMETRY)) == 2  # birth + one answer
        assert uplink.stats.connected and uplink.stats.last_error is None  # a bad hello is not a link problem


def test_answers_are_spread_over_the_jitter_window(outbox: Outbox) -> None:
    delays = []
    for seed in range(300):  # 300 gates receiving the same hello at the same instant
        reporter = Reporter(outbox, UplinkHealth(outbox, end_to_end=False), Topics.of(DEVICE_ID), device_id=DEVICE_ID,
                            software_version=None, end_to_end=False, telemetry_interval_s=None, hello_jitter_s=5.0,
                            rng=random.Random(seed))
        session = Session(mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"g{seed}"), opened=0.0)
        reporter.hello(session, hello(), now=100.0)
        delays.append(session.hello_answer_at - 100.0)
    assert all(0.0 <= delay <= 5.0 for delay in delays)
    assert min(delays) < 0.5 and max(delays) > 4.5  # the whole window is used
    assert len({int(delay * 1000) for delay in delays}) > 270  # hardly two answers in the same millisecond


def test_the_cpu_temperature_is_read_from_the_thermal_zone_when_there_is_one(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert read_cpu_temp_c(zone) == 48.3
    zone.write_text("n/a\n")
    assert read_cpu_temp_c(zone) is None
    assert read_cpu_temp_c(tmp_path / "absent") is None
    assert Path("/sys/class/thermal/thermal_zone0/temp") == CPU_THERMAL_ZONE


def test_disk_size_and_frame_rate_figures(tmp_path: Path) -> None:
    total = disk_total_bytes(tmp_path)
    assert total is not None and total > 0
    assert disk_total_bytes(tmp_path / "absent") is None
    rate = CounterRate(count=0, at=10.0)
    assert rate.per_second(150, 20.0) == 15.0  # 150 frames in 10 s
    assert rate.per_second(150, 20.0) is None  # no time has passed
    assert rate.per_second(180, 22.0) == 15.0  # since the previous reading, not since the start
    assert rate.per_second(10, 23.0) is None  # a counter that went back (a restart) says nothing


def test_only_the_province_service_may_say_hello_and_a_gate_answers_it(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    province, _params = start_provincial_broker(
        tmp_path / "province", pki, sites={"market-1": ("gate-a", "gate-b")}, operators=("operator", "watcher"),
        services=("province-svc",))

    def tls(cn: str) -> dict[str, str]:
        return pki.paho_tls(pki.client(cn))

    def listener_as(cn: str, fleet: FleetState) -> FleetListener:
        credential = pki.client(cn)
        return FleetListener(BrokerSettings(host=LOOPBACK, port=province.port, ca_file=pki.ca_file,
                                            cert_file=credential.cert, key_file=credential.key, client_id=cn), fleet)

    try:
        # A gate (gate-b: gate-a is the uplink below; the CN is the client id) and an operator may not say hello.
        assert say(LOOPBACK, province.port, hello(), client_id="gate-b", **tls("gate-b")) == "Not authorized"
        assert say(LOOPBACK, province.port, hello(), client_id="operator", **tls("operator")) == "Not authorized"
        with (
            Outbox(tmp_path / "outbox.sqlite") as outbox,
            Subscriber(LOOPBACK, province.port, [wire.telemetry_topic("gate-a")], client_id="watcher",
                       **tls("watcher")) as reader,
            gate_uplink(outbox, "gate-a", province, pki, pki.client("gate-a"), telemetry_interval_s=3600,
                        hello_jitter_s=0.2) as uplink,
        ):
            first_report_seen(reader, wire.telemetry_topic("gate-a"))
            fleet = FleetState(FleetSettings())
            with listener_as("province-svc", fleet) as listener:
                assert listener.wait_connected(10), listener.last_error
                wait_until(lambda: uplink.stats.hellos_answered == 1, 10, "gate-a's answer to the service")
                wait_until(lambda: (view := fleet.view("gate-a")) is not None and view.telemetry_at is not None,
                           10, "the answer's telemetry in the fleet")
                assert listener.hello_refused is None
            view = fleet.view("gate-a")
            assert view is not None and view.state == "online"
            refused = FleetState(FleetSettings())
            with listener_as("operator", refused) as operator:
                assert operator.wait_connected(10), operator.last_error
                wait_until(lambda: operator.hello_refused == "Not authorized", 10, "the operator's hello refused")
                wait_until(lambda: refused.view("gate-a") is not None, 10, "the retained state, all it can see")
            assert uplink.stats.hellos_answered == 1
    finally:
        province.stop()


def test_the_provincial_acl_gives_the_service_role_the_hello_and_the_daily_report(tmp_path: Path) -> None:
    files = TlsFiles("/etc/mosquitto/certs/ca.pem", "/etc/mosquitto/certs/s.pem", "/etc/mosquitto/certs/s.key")
    acl = render_provincial_acl(ProvincialBroker(listener_tls=files, services=("province-svc",)))
    assert user_blocks(acl)["province-svc"] == [
        "topic deny qrgate/v1/device/province-svc/#", "topic read qrgate/v1/device/+/checkin",
        "topic read qrgate/v1/device/+/status", "topic read qrgate/v1/device/+/available",
        "topic read qrgate/v1/device/+/telemetry", "topic read qrgate/v1/site/#",
        f"topic write {wire.PROVINCE_HELLO_TOPIC}", f"topic readwrite {wire.DAILY_REPORT_TOPIC}",
        # the dashboard's commands, signed by an operator key (a gate refuses any other), and their answers
        "topic write qrgate/v1/device/+/command", "topic read qrgate/v1/device/+/response",
    ]
    assert "pattern read qrgate/v1/province/#" in acl.splitlines()  # every gate reads the hello, none writes it

    parser = argparse.ArgumentParser(prog="qrgate-issuer")
    broker_config.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["broker-config", "province", "--out", str(tmp_path / "out"), "--service", "svc-1"])
    assert args.run(args) == 0
    assert "user svc-1\n" in (tmp_path / "out" / "qrgate.acl").read_text()
