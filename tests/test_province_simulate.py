"""``qrgate-province simulate``: simulated gates against a real Mosquitto, checked by a real subscriber.

Correctness only (no timing): every gate's retained status and availability, check-ins that parse with gap-free
sequence numbers, the last will on an abrupt drop, the answer to the province's hello, a clean stop; the command
line; the worker processes the benchmark uses.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import publish

from mqtt_helpers import Subscriber, wait_until
from qrgate import wire
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province.cli import main
from qrgate_provisioning.province.settings import BrokerSettings
from qrgate_provisioning.province.simulate import GateSimulator
from qrgate_provisioning.province.simulate_gate import fleet_identities
from qrgate_provisioning.province.simulate_io import raise_open_files
from qrgate_provisioning.province.simulate_pool import SimulatorPool
from qrgate_provisioning.province.simulate_settings import SimulationSettings
from qrgate_tools.broker import MosquittoBroker, free_loopback_port

DEVICE_TOPICS = [wire.ALL_CHECKINS, wire.ALL_AVAILABILITY, wire.ALL_STATUS, wire.ALL_TELEMETRY]


def _broker_settings(broker: MosquittoBroker) -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port)


def _retained_by_topic(broker: MosquittoBroker, topics: list[str], expected: int) -> dict[str, bytes]:
    """What the broker retained on ``topics``, as a new subscriber receives it (``expected`` messages)."""
    with Subscriber(broker.host, broker.port, topics, client_id=f"retained-{time.monotonic_ns()}") as reader:
        wait_until(lambda: len(reader.messages) >= expected, 10, f"{expected} retained messages")
        assert all(message.retain for message in reader.messages)
        return {message.topic: message.payload for message in reader.messages}


def _device_of(topic: str) -> str:
    return topic.split("/")[3]


def test_identities_spread_gates_over_places_with_both_directions() -> None:
    identities = fleet_identities(5, 2, prefix="t")
    assert [(i.device_id, i.site_id, i.gate, i.direction) for i in identities] == [
        ("t-gate-00001", "t-site-00001", "gate-1", "in"), ("t-gate-00002", "t-site-00002", "gate-1", "in"),
        ("t-gate-00003", "t-site-00001", "gate-2", "out"), ("t-gate-00004", "t-site-00002", "gate-2", "out"),
        ("t-gate-00005", "t-site-00001", "gate-3", "in"),
    ]


def test_settings_name_every_bad_option() -> None:
    with pytest.raises(ProvinceError, match=r"--gates must be at least 1.*--offline-fraction must be in \[0, 1\)"):
        SimulationSettings(gates=0, offline_fraction=1.0)
    assert SimulationSettings(gates=9).places == 4  # one place per two gates by default


def test_open_file_limit_beyond_the_hard_one_is_a_clear_error() -> None:
    with pytest.raises(ProvinceError, match="RLIMIT_NOFILE"):
        raise_open_files(2**40)


def test_simulated_gates_speak_the_wire_contract(broker: MosquittoBroker) -> None:
    settings = SimulationSettings(gates=20, rate=60.0, places=10, heartbeat_s=1.0, hello_jitter_s=0.3, seed=7,
                                  prefix="t")
    identities = {identity.device_id: identity for identity in fleet_identities(20, 10, prefix="t")}
    with Subscriber(broker.host, broker.port, DEVICE_TOPICS, client_id="watcher") as live:
        simulator = GateSimulator(settings, _broker_settings(broker))
        runner = threading.Thread(target=simulator.run, daemon=True)
        runner.start()
        try:
            wait_until(lambda: simulator.stats.connected == 20, 10, "20 gates connected")

            # Every gate's retained availability and status, as a new subscriber (a restarted service) gets them.
            retained = _retained_by_topic(broker, [wire.ALL_AVAILABILITY, wire.ALL_STATUS], 40)
            for device_id, identity in identities.items():
                assert retained[wire.availability_topic(device_id)] == b"online"
                status = wire.DeviceStatus.from_json(retained[wire.status_topic(device_id)])
                assert (status.device_id, status.state, status.site_id, status.gate, status.direction) == (
                    device_id, "online", identity.site_id, identity.gate, identity.direction)

            wait_until(lambda: len(live.checkins()) >= 90, 15, "90 check-ins")
            wait_until(lambda: {_device_of(m.topic) for m in live.messages if m.topic.endswith("/telemetry")}
                       == set(identities), 10, "telemetry from every gate")
            for message in live.messages:
                if message.topic.endswith("/telemetry"):
                    assert wire.Telemetry.from_json(message.payload).device_id == _device_of(message.topic)

            # An abrupt drop: the broker publishes the gate's will.
            dropped = "t-gate-00001"
            answer = simulator.request({"command": "drop", "device_id": dropped, "away_s": 600})
            assert answer["ok"] is True
            wait_until(lambda: [m.payload for m in live.on(wire.availability_topic(dropped))][-1:] == [b"offline"],
                       10, "the dropped gate's will")
            assert retained_payload(broker, wire.availability_topic(dropped)) == b"offline"

            # The province says hello: every connected gate publishes its status again.
            statuses_before = {device: len(live.on(wire.status_topic(device))) for device in identities}
            hello = wire.ProvinceHello(service="test-province", time=wire.iso_utc(time.time()))
            publish.single(wire.PROVINCE_HELLO_TOPIC, hello.to_json(), qos=1, hostname=broker.host,
                           port=broker.port, client_id="test-province", protocol=mqtt.MQTTv5)
            answering = set(identities) - {dropped}
            wait_until(lambda: all(len(live.on(wire.status_topic(device))) > statuses_before[device]
                                   for device in answering), 10, "every connected gate's status again")
            assert len(live.on(wire.status_topic(dropped))) == statuses_before[dropped]
        finally:
            simulator.stop()
            runner.join(20)
        assert not runner.is_alive()

        # Every check-in is a valid event; sequence numbers have no gaps; every one published arrived.
        events = live.checkins()
        for message in live.messages:
            if message.topic.endswith("/checkin"):
                assert wire.CheckinEvent.from_json(message.payload).device_id == _device_of(message.topic)
        assert len({event.event_id for event in events}) == len(events)
        assert all(uuid.UUID(event.event_id).version == 7 for event in events)
        seqs: dict[str, set[int]] = defaultdict(set)
        for event in events:
            seqs[event.device_id].add(event.seq)
            assert (event.site_id, event.gate, event.direction) == (
                identities[event.device_id].site_id, identities[event.device_id].gate,
                identities[event.device_id].direction)
            assert (event.subject_id is None) == (event.verdict == "rejected")
        for device_id, numbers in seqs.items():
            assert numbers == set(range(1, max(numbers) + 1)), f"{device_id} has gaps"
            if device_id != dropped:
                assert max(numbers) == simulator.last_seq(device_id)
        assert {event.verdict for event in events} >= {"accepted", "rejected"}
        assert {event.direction for event in events} == {"in", "out"}
        assert simulator.stats.checkins == sum(simulator.last_seq(device) for device in identities)
        assert (simulator.stats.drops, simulator.stats.lost) == (1, 0)

    # A clean stop: status and availability "offline", retained.
    retained = _retained_by_topic(broker, [wire.ALL_AVAILABILITY, wire.ALL_STATUS], 40)
    assert {retained[wire.availability_topic(device)] for device in identities} == {b"offline"}
    assert {wire.DeviceStatus.from_json(retained[wire.status_topic(device)]).state
            for device in identities.keys() - {dropped}} == {"offline"}


def retained_payload(broker: MosquittoBroker, topic: str) -> bytes:
    return _retained_by_topic(broker, [topic], 1)[topic]


def test_command_runs_for_its_duration_and_prints_its_counters(broker: MosquittoBroker,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--gates", "4", "--rate", "20", "--duration", "1.5", "--host", broker.host,
                 "--port", str(broker.port), "--prefix", "cli", "--seed", "3", "--progress", "0"])
    assert code == 0
    counters = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (counters["gates"], counters["peak_connected"], counters["connected"]) == (4, 4, 0)
    assert counters["checkins"] > 0
    retained = _retained_by_topic(broker, [wire.ALL_AVAILABILITY], 4)
    assert retained == {wire.availability_topic(f"cli-gate-{n:05d}"): b"offline" for n in range(1, 5)}


def test_command_fails_clearly_when_no_broker_answers(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_loopback_port()  # nothing listens there
    code = main(["simulate", "--gates", "2", "--duration", "0.5", "--host", "127.0.0.1", "--port", str(port),
                 "--progress", "0"])
    assert code == 1
    assert f"no simulated gate could connect to 127.0.0.1:{port}" in capsys.readouterr().err


def test_worker_processes_share_the_gates(broker: MosquittoBroker) -> None:
    settings = SimulationSettings(gates=6, rate=30.0, heartbeat_s=5.0, prefix="pool", seed=1)
    with Subscriber(broker.host, broker.port, [wire.ALL_AVAILABILITY, wire.ALL_CHECKINS],
                    client_id="pool-watcher") as live:
        pool = SimulatorPool(settings, _broker_settings(broker), processes=2).start()
        try:
            wait_until(lambda: pool.stats().connected == 6, 30, "6 gates connected over 2 workers")
            assert sorted(pool.online()) == [f"pool-gate-{n:05d}" for n in range(1, 7)]
            answer = pool.request({"command": "drop", "device_id": "pool-gate-00002", "away_s": 600})
            assert answer["ok"] is True
            wait_until(lambda: [m.payload for m in live.on(wire.availability_topic("pool-gate-00002"))][-1:]
                       == [b"offline"], 10, "the dropped gate's will")
            wait_until(lambda: {e.device_id for e in live.checkins()} >= {"pool-gate-00001", "pool-gate-00004"},
                       15, "check-ins from both workers' gates")
        finally:
            stats = pool.stop()
    assert (stats.gates, stats.peak_connected, stats.drops) == (6, 6, 1)
    assert stats.checkins >= len(live.checkins()) > 0


def test_churn_drops_gates_abruptly_and_brings_them_back(broker: MosquittoBroker) -> None:
    settings = SimulationSettings(gates=8, rate=40.0, offline_fraction=0.5, away_s=(0.2, 0.5), heartbeat_s=5.0,
                                  prefix="churn", seed=5)
    with Subscriber(broker.host, broker.port, [wire.ALL_AVAILABILITY, wire.ALL_CHECKINS],
                    client_id="churn-watcher") as live:
        simulator = GateSimulator(settings, _broker_settings(broker))
        runner = threading.Thread(target=simulator.run, daemon=True)
        runner.start()
        try:
            def came_back() -> set[str]:
                """Gates that said online again after a will."""
                back: set[str] = set()
                for device in (f"churn-gate-{n:05d}" for n in range(1, 9)):
                    said = [m.payload for m in live.on(wire.availability_topic(device))]
                    if b"offline" in said and b"online" in said[said.index(b"offline"):]:
                        back.add(device)
                return back

            wait_until(lambda: len(came_back()) >= 3, 15, "three gates dropped and back")
        finally:
            simulator.stop()
            runner.join(20)
    assert simulator.stats.drops >= 3 and simulator.stats.reconnects >= 3
    assert simulator.stats.lost == 0  # every drop was the simulation's own
    seqs: dict[str, set[int]] = defaultdict(set)
    for event in live.checkins():
        seqs[event.device_id].add(event.seq)
    for device_id, numbers in seqs.items():  # what was in flight at a drop is sent again after the reconnect
        assert numbers == set(range(1, max(numbers) + 1)), f"{device_id} has gaps"
