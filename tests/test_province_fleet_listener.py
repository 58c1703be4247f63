"""The fleet listener (province.fleet_listener) against a real Mosquitto and a real PostgreSQL: a real gate daemon
answers the hello, SIGKILL brings its last will, a gate that falls silent without one goes stale, presence rows
survive a database failure, new gates are handed to the registry; and ``qrgate-province fleet`` prints it all."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon_helpers import write_daemon_config, write_trust_anchors
from mqtt_helpers import Subscriber, uplink_for, wait_until
from qrgate import wire
from qrgate.outbox import Outbox
from qrgate_provisioning.mint import mint_qrgate_pass
from qrgate_provisioning.province import presence
from qrgate_provisioning.province.commands import fleet as fleet_command
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.fleet import FleetState, GateView
from qrgate_provisioning.province.fleet_listener import FleetListener
from qrgate_provisioning.province.settings import BrokerSettings, DatabaseSettings, FleetSettings
from qrgate_tools.broker import MosquittoBroker

DAEMON = "gate-daemon-01"
SITE = "bus-station-1"


@pytest.fixture
def database(province_dsn: str) -> Iterator[Database]:
    """The province's database with the presence tables (the room this listener writes to)."""
    with Database(DatabaseSettings(dsn=province_dsn), max_connections=2) as db:
        with db.connection() as connection:
            connection.execute(presence.SCHEMA)
        yield db


def presence_rows(database: Database, device_id: str) -> list[tuple[bool, str]]:
    with database.connection() as connection:
        rows = connection.execute("SELECT online, cause FROM gate_presence WHERE device_id = %s ORDER BY at",
                                  (device_id,)).fetchall()
    return [(bool(online), str(cause)) for online, cause in rows]


def heard_count(database: Database, device_id: str) -> int:
    with database.connection() as connection:
        row = connection.execute("SELECT count(*) FROM gate_heard WHERE device_id = %s", (device_id,)).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def broker_settings(broker: MosquittoBroker, client_id: str = "qrgate-province-test") -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port, client_id=client_id)


def start_daemon(tmp_path: Path, broker: MosquittoBroker) -> subprocess.Popen[bytes]:
    """The real gate daemon on a looping script of one valid pass, answering hellos within 0.3 s."""
    trust = tmp_path / "trust"
    key = write_trust_anchors(trust)
    now = int(time.time())
    script = tmp_path / "visitors.json"
    script.write_text(json.dumps([mint_qrgate_pass(key, "VN-HN", b"\x01" * 8, "s1", now - 60, now + 3600)]))
    config = write_daemon_config(
        tmp_path / "gate.toml", device_id=DAEMON, site_id=SITE, camera=f'path = "{script}"\nloop = true',
        trust=trust, outbox=tmp_path / "outbox.sqlite", port=broker.port, mqtt_extra="hello_jitter_s = 0.3",
        service="telemetry_interval_s = 3600",
    )
    log = (tmp_path / "gate.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "qrgate.cli", "run", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def clear_retained(broker: MosquittoBroker, *topics: str) -> None:
    """Publish empty retained messages: the broker forgets what it kept on ``topics``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="retained-clearer", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_gate_started_before_the_service_answers_its_hello_and_its_sigkill_is_recorded(
        tmp_path: Path, broker: MosquittoBroker, database: Database) -> None:
    telemetry = wire.telemetry_topic(DAEMON)
    with Subscriber(broker.host, broker.port, [telemetry]) as watcher:
        daemon = start_daemon(tmp_path, broker)
        try:
            wait_until(lambda: watcher.on(telemetry), 60, "the daemon's first telemetry (it is up and subscribed)")
            # Whatever the broker retained is gone: only the answer to the hello can tell the service about it.
            clear_retained(broker, wire.status_topic(DAEMON), wire.availability_topic(DAEMON))
            fleet = FleetState(FleetSettings(heartbeat_s=3600))
            filed: list[GateView] = []
            with FleetListener(broker_settings(broker), fleet, database=database, on_new_gate=filed.append,
                               sweep_every_s=0.1) as listener:
                assert listener.wait_connected(10), listener.last_error
                wait_until(lambda: (view := fleet.view(DAEMON)) is not None and view.state == "online"
                           and view.telemetry_at is not None and view.status_at is not None, 15, "the answer")
                view = fleet.view(DAEMON)
                assert view is not None
                assert (view.site_id, view.gate, view.direction) == (SITE, "main", "in")
                assert view.software and view.config_hash and view.pending is not None
                assert view.frames_per_s is not None and view.frames_per_s > 0  # the camera runs at 60 fps
                assert isinstance(view.clock_synced, bool)
                assert view.disk_total_bytes is not None and view.disk_total_bytes >= (view.disk_free_bytes or 0)
                wait_until(lambda: presence_rows(database, DAEMON) == [(True, "message")], 10, "the online row")
                assert [v.device_id for v in filed] == [DAEMON] and filed[0].site_id == SITE

                daemon.send_signal(signal.SIGKILL)  # a power cut: the broker sees the socket die, sends the will
                daemon.wait(10)
                wait_until(lambda: (v := fleet.view(DAEMON)) is not None and v.state == "offline", 15, "the will")
                view = fleet.view(DAEMON)
                assert view is not None
                assert (view.offline_cause, view.stale) == ("will", False) and view.last_seen is not None
                wait_until(lambda: presence_rows(database, DAEMON) == [(True, "message"), (False, "will")], 10,
                           "the offline row")
                assert heard_count(database, DAEMON) == 1
                assert listener.hellos_sent == 1 and fleet.malformed == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


class RawGate:
    """A bare MQTT client standing in for a gate that publishes and then falls silent without a will being sent:
    its connection stays open (keep-alive 60 s), it just says nothing more (a hung process, a cut power line
    the broker has not noticed)."""

    def __init__(self, broker: MosquittoBroker, device_id: str) -> None:
        self.device_id = device_id
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.will_set(wire.availability_topic(device_id), wire.OFFLINE, qos=1, retain=True)
        self.client.connect(broker.host, broker.port, keepalive=60)
        self.client.loop_start()

    def birth(self) -> None:
        status = wire.DeviceStatus(device_id=self.device_id, site_id="market-1", state="online",
                                   time=wire.iso_utc(time.time()), software="test")
        self.client.publish(wire.availability_topic(self.device_id), b"online", qos=1, retain=True).wait_for_publish(5)
        self.client.publish(wire.status_topic(self.device_id), status.to_json(), qos=1, retain=True).wait_for_publish(5)

    def telemetry(self, pending: int = 0) -> None:
        report = wire.Telemetry(device_id=self.device_id, time=wire.iso_utc(time.time()), uptime_s=1, sent=0,
                                resent=0, delivered=0, refused=0, pending=pending)
        self.client.publish(wire.telemetry_topic(self.device_id), report.to_json(), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_gate_that_falls_silent_without_a_will_goes_offline_after_its_missed_heartbeats(
        broker: MosquittoBroker, database: Database) -> None:
    fleet = FleetState(FleetSettings(heartbeat_s=0.3, missed_heartbeats=2))
    with FleetListener(broker_settings(broker), fleet, database=database, sweep_every_s=0.1) as listener:
        assert listener.wait_connected(10), listener.last_error
        gate = RawGate(broker, "gate-silent")
        try:
            gate.birth()
            wait_until(lambda: presence_rows(database, "gate-silent") == [(True, "message")], 10, "the online row")
            # Nothing more: after 2 x 0.3 s of silence the service's own verdict, long before any keep-alive.
            wait_until(lambda: (v := fleet.view("gate-silent")) is not None and v.state == "offline", 10, "stale")
            view = fleet.view("gate-silent")
            assert view is not None and (view.stale, view.offline_cause) == (True, "stale")
            assert view.last_seen is not None and view.offline_since is not None
            assert view.offline_since > view.last_seen  # as of the first missed report
            wait_until(lambda: presence_rows(database, "gate-silent")[-1:] == [(False, "stale")], 10, "stale row")
            gate.telemetry(pending=3)  # it speaks again
            wait_until(lambda: (v := fleet.view("gate-silent")) is not None and v.state == "online", 10, "back")
            view = fleet.view("gate-silent")
            assert view is not None and (view.stale, view.pending) == (False, 3)
            wait_until(lambda: presence_rows(database, "gate-silent") == [
                (True, "message"), (False, "stale"), (True, "message")], 10, "the online row again")
        finally:
            gate.close()


def test_presence_rows_wait_through_a_database_failure_and_are_stored_after(
        broker: MosquittoBroker, database: Database) -> None:
    with database.connection() as connection:  # a real failure: every INSERT now finds no table
        connection.execute("ALTER TABLE gate_presence RENAME TO gate_presence_away")
    fleet = FleetState(FleetSettings())
    with FleetListener(broker_settings(broker), fleet, database=database, sweep_every_s=0.1) as listener:
        assert listener.wait_connected(10), listener.last_error
        gate = RawGate(broker, "gate-db")
        try:
            gate.birth()
            wait_until(lambda: fleet.view("gate-db") is not None, 10, "the gate in the fleet")
            wait_until(lambda: listener.unstored == 2, 10, "the online and heard rows kept")
            with database.connection() as connection:
                connection.execute("ALTER TABLE gate_presence_away RENAME TO gate_presence")
            wait_until(lambda: listener.unstored == 0, 10, "the rows stored once the table is back")
            assert presence_rows(database, "gate-db") == [(True, "message")]
            assert heard_count(database, "gate-db") == 1
        finally:
            gate.close()


def test_a_new_gate_is_filed_once_and_a_failing_registry_is_retried(broker: MosquittoBroker) -> None:
    calls: list[str] = []
    filed = threading.Event()

    def file_gate(view: GateView) -> None:
        calls.append(view.device_id)
        if len(calls) == 1:
            raise RuntimeError("registry unavailable")
        filed.set()

    fleet = FleetState(FleetSettings())
    with FleetListener(broker_settings(broker), fleet, on_new_gate=file_gate, sweep_every_s=0.05) as listener:
        assert listener.wait_connected(10), listener.last_error
        gate = RawGate(broker, "gate-new")
        try:
            gate.birth()
            gate.telemetry()
            assert filed.wait(10), "the retried filing"
            gate.birth()
            wait_until(lambda: fleet.counters().messages["status"] == 2, 10, "the second status")
            time.sleep(0.2)  # a few more rounds: a gate already filed is not filed again
        finally:
            gate.close()
    assert calls == ["gate-new", "gate-new"]


def run_fleet_command(tmp_path: Path, broker: MosquittoBroker, *options: str) -> int:
    config = tmp_path / "province.toml"
    config.write_text(f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n')
    parser = argparse.ArgumentParser(prog="qrgate-province")
    fleet_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fleet", "--config", str(config), *options])
    return int(args.run(args))


def test_the_fleet_command_says_hello_and_prints_the_gates(tmp_path: Path, broker: MosquittoBroker,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = wire.telemetry_topic("gate-t1")
    with Outbox(tmp_path / "outbox.sqlite") as outbox, Subscriber(broker.host, broker.port, [telemetry]) as watcher:
        uplink = uplink_for(outbox, broker, telemetry_interval_s=3600, hello_jitter_s=0.1,
                            status_details=lambda: {"site_id": "market-1", "gate": "north"})
        with uplink:
            wait_until(lambda: watcher.on(telemetry), 10, "the gate's first telemetry (it is subscribed)")
            assert run_fleet_command(tmp_path, broker, "--wait", "1", "--json") == 0
            document = json.loads(capsys.readouterr().out)
            # Within 30 s of its answer the gate does not answer again: this run sees what the broker retained.
            assert run_fleet_command(tmp_path, broker, "--wait", "0.5") == 0
            table = capsys.readouterr().out
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["DEVICE", "PLACE", "STATE"]
    assert row.split()[:3] == ["gate-t1", "market-1/north", "online"] and " ago " in row
    assert "1 gate(s): 1 online, 0 offline, 0 unknown; 0 alert(s)" in table
    [gate] = document["gates"]
    assert (gate["device_id"], gate["state"], gate["site_id"], gate["pending"], gate["alerts"]) == (
        "gate-t1", "online", "market-1", 0, [])
    assert gate["telemetry_at"] is not None  # telemetry is never retained: this came with the hello's answer
    assert (uplink.stats.hellos_answered, uplink.stats.hellos_ignored) == (1, 1)
