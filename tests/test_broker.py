"""The private Mosquitto launcher, against the real /usr/sbin/mosquitto."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_helpers import Subscriber, wait_until
from qrgate_tools import broker as broker_module
from qrgate_tools.broker import BrokerError, MosquittoBroker


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def round_trip(broker: MosquittoBroker, topic: str = "probe/x") -> bytes:
    with Subscriber(broker.host, broker.port, [topic]) as subscriber:
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-publisher", protocol=mqtt.MQTTv5)
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        publisher.publish(topic, b"ping", qos=1).wait_for_publish(5)
        publisher.disconnect()
        publisher.loop_stop()
        wait_until(lambda: subscriber.on(topic), 5, "the probe message")
        return subscriber.on(topic)[0].payload


def test_starts_on_a_free_loopback_port_and_relays_messages(broker: MosquittoBroker) -> None:
    assert broker.running and broker.port > 0
    assert f"listener {broker.port} 127.0.0.1" in broker.config_path.read_text()
    assert round_trip(broker) == b"ping"
    assert "running" in broker.log_tail()


def test_stop_closes_the_port_and_restart_reuses_it(broker: MosquittoBroker) -> None:
    port = broker.port
    broker.stop()
    assert not broker.running
    assert not accepts_connections(port)
    broker.restart()
    assert broker.port == port and broker.running
    assert round_trip(broker) == b"ping"


def test_kill_is_abrupt_and_restart_recovers(broker: MosquittoBroker) -> None:
    port, pid = broker.port, broker.pid
    broker.kill()
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not accepts_connections(port)
    broker.restart()
    assert broker.port == port
    assert round_trip(broker) == b"ping"


def test_paused_broker_accepts_tcp_but_answers_nothing(broker: MosquittoBroker) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paused-probe", protocol=mqtt.MQTTv5)
    connected = []
    client.on_connect = lambda *args: connected.append(args[3])
    broker.pause()
    try:
        client.connect(broker.host, broker.port)  # the kernel completes the TCP handshake
        client.loop_start()
        assert not connected  # no CONNACK from a stopped process
    finally:
        broker.resume()
    wait_until(lambda: connected, 5, "the CONNACK after resume")
    assert not connected[0].is_failure
    client.disconnect()
    client.loop_stop()


def test_bad_configuration_fails_with_the_brokers_own_message(tmp_path: Path) -> None:
    bad = MosquittoBroker(tmp_path / "bad", extra_config="no_such_option true")
    with pytest.raises(BrokerError) as caught:
        bad.start()
    assert "no_such_option" in str(caught.value)
    assert not bad.running


def test_missing_mosquitto_tells_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(BrokerError, match=r"apt-get install mosquitto"):
        MosquittoBroker(tmp_path / "none").start()


def test_fixed_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match=r"Address already in use"):
            MosquittoBroker(tmp_path / "busy", port=port).start()


def test_an_automatic_port_lies_below_the_ephemeral_range_so_a_reconnecting_client_cannot_self_connect() -> None:
    low, _high = broker_module._ephemeral_range()
    ports = {broker_module.free_loopback_port() for _ in range(20)}
    assert len(ports) > 1  # random, so parallel brokers rarely race for one port
    assert all(1024 <= port < low for port in ports), sorted(ports)
