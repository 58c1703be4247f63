"""Commands to a real gate daemon (issue 15): ``qrgate run`` as a child process on the real broker, commanded by the
province's sender (``command_sender``) and by a bare MQTT 5 requester that checks the protocol itself.

A good status command is done and carries the status; a forged, an expired, a replayed and a foreign command are
each refused by the daemon with its reason, answered on the gate's own response topic with the request's
correlation data (even when the request names another response topic); restart is answered, then the daemon exits
with EX_TEMPFAIL (75) for systemd to start it again. With the rendered mTLS brokers, a gate's certificate cannot
write its own command (or ack) topic, while the operator's command crosses the bridge down and the answer crosses
it up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from daemon_helpers import write_daemon_config, write_trust_anchors
from faults import Chain, gate_uplink
from mqtt_helpers import Subscriber, retained, wait_until
from qrgate import wire
from qrgate.config import GateConfig, RemoteConfig
from qrgate.outbox import Outbox
from qrgate.preflight import preflight
from qrgate.remote.auth import CommandAuthenticator, OperatorKeys
from qrgate.remote.dispatch import CommandHandler
from qrgate.remote.nonces import NonceStore
from qrgate.wire import CommandResponse
from qrgate_provisioning.province.command_sender import CommandSender, send_command
from qrgate_provisioning.province.command_signing import (
    OperatorKey,
    new_command,
    new_operator_key,
    operator_keys_file,
    sign_command,
)
from qrgate_provisioning.province.settings import BrokerSettings
from qrgate_tools.broker import MosquittoBroker

DEVICE = "gate-remote-01"
ACCEPTED = ("Success", "No matching subscribers")


class Requester:
    """A bare MQTT 5 client: publishes payloads with chosen properties, and records every message it receives with
    its correlation data; it listens to every gate's response topic (and what ``subscribe`` adds)."""

    def __init__(self, host: str, port: int, *, client_id: str = "requester", tls: dict[str, str] | None = None):
        self.messages: list[tuple[str, bytes | None, bytes]] = []  # (topic, correlation data, payload)
        self.pubacks: list[str] = []
        self._subacks = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls:
            self._client.tls_set(**tls)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: self._count_suback()
        self._client.on_publish = lambda _c, _u, _mid, reason, _p: self._record(self.pubacks, str(reason))
        self._client.connect(host, port)
        self._client.loop_start()
        self.subscribe(wire.ALL_RESPONSES)

    def subscribe(self, topic: str) -> None:
        before = self._subacks
        self._client.subscribe(topic, qos=1)
        wait_until(lambda: self._subacks > before, 10, f"the SUBACK for {topic}")

    @property
    def answers(self) -> list[tuple[str, bytes | None, CommandResponse]]:
        """The messages on response topics, read as CommandResponse."""
        with self._lock:
            return [(topic, data, CommandResponse.from_json(payload)) for topic, data, payload in self.messages
                    if topic.endswith("/response")]

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for received, _data, payload in self.messages if received == topic]

    def _count_suback(self) -> None:
        with self._lock:
            self._subacks += 1

    def _record(self, into: list, item: object) -> None:
        with self._lock:
            into.append(item)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        data = getattr(message.properties, "CorrelationData", None)
        self._record(self.messages, (message.topic, data, bytes(message.payload)))

    def publish(self, topic: str, payload: bytes, *, correlation: bytes | None = None,
                response_topic: str | None = None) -> str:
        properties = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            properties.CorrelationData = correlation
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        before = len(self.pubacks)
        self._client.publish(topic, payload, qos=1, properties=properties)
        wait_until(lambda: len(self.pubacks) > before, 10, f"the PUBACK for {topic}")
        return self.pubacks[before]

    def ask(self, payload: bytes, correlation: bytes, *, response_topic: str = wire.command_response_topic(DEVICE)
            ) -> tuple[str, bytes | None, CommandResponse]:
        """Send ``payload`` to the daemon and return the next answer: (its topic, correlation data, response)."""
        before = len(self.answers)
        self.publish(wire.command_topic(DEVICE), payload, correlation=correlation, response_topic=response_topic)
        wait_until(lambda: len(self.answers) > before, 20, "the daemon's answer")
        return self.answers[before]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def operator_key(tmp_path: Path) -> OperatorKey:
    key = new_operator_key(tmp_path / "ops.key", "ops-1")
    (tmp_path / "operators.json").write_text(operator_keys_file([key]))
    return key


@pytest.fixture
def daemon(tmp_path: Path, broker: MosquittoBroker, operator_key: OperatorKey) -> Iterator[subprocess.Popen]:
    """The real daemon, commands on, looping a one-visitor scene; its log in gate.log."""
    trust = tmp_path / "trust"
    write_trust_anchors(trust)
    script = tmp_path / "visitors.json"
    script.write_text('[{"payload": "https://example.com/", "medium": "paper"}]')
    config = write_daemon_config(
        tmp_path / "gate.toml", device_id=DEVICE, site_id="market-1", camera=f'path = "{script}"\nloop = true',
        trust=trust, outbox=tmp_path / "outbox.sqlite", port=broker.port, service="telemetry_interval_s = 3600",
        remote=f'operator_keys = "{tmp_path / "operators.json"}"\nnonces_path = "{tmp_path / "nonces.sqlite"}"',
    )
    log = (tmp_path / "gate.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "qrgate.cli", "run", "--config", str(config)],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        # The gate subscribes before its birth: once it says 'online' it takes commands.
        topic = wire.availability_topic(DEVICE)
        with Subscriber(broker.host, broker.port, [topic], client_id="availability-watch") as watch:
            wait_until(lambda: process.poll() is not None or b"online" in [m.payload for m in watch.on(topic)], 40,
                       "the daemon online")
        assert process.poll() is None, (tmp_path / "gate.log").read_text()
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        log.close()


def test_the_daemon_does_a_good_command_refuses_bad_ones_with_the_reason_and_restarts_on_command(
        tmp_path: Path, broker: MosquittoBroker, daemon: subprocess.Popen, operator_key: OperatorKey) -> None:
    settings = BrokerSettings(host=broker.host, port=broker.port)
    requester = Requester(broker.host, broker.port)
    try:
        # Good: the province's sender, end to end.
        good = new_command("status", DEVICE, "lan")
        status = send_command(settings, operator_key, good, timeout_s=20)
        assert (status.outcome, status.command, status.nonce, status.device_id) == ("done", "status", good.nonce,
                                                                                    DEVICE)
        assert status.result["device_id"] == DEVICE and status.result["site_id"] == "market-1"
        uplink = status.result["uplink"]
        assert isinstance(uplink, dict) and uplink["connected"] is True
        assert str(status.result["status_line"]).startswith("frames ")
        wait_until(lambda: requester.answers, 10, "the requester's copy of the status answer")

        forger = OperatorKey("ops-1", Ed25519PrivateKey.generate())  # the trusted key's id, another key
        foreign = new_command("restart", "gate-elsewhere", "lan")  # signed for real, for another gate
        cases = [
            ("forged", sign_command(forger, new_command("restart", DEVICE, "mallory")).to_json(), "bad_signature"),
            ("expired", sign_command(operator_key, new_command("restart", DEVICE, "lan", lifetime_s=60,
                                                               now=time.time() - 600)).to_json(), "expired"),
            ("replayed", sign_command(operator_key, good).to_json(), "replayed"),
            ("foreign", sign_command(operator_key, foreign).to_json(), "wrong_device"),
        ]
        for index, (case, payload, reason) in enumerate(cases):
            correlation = f"case-{index}-{case}".encode()
            # The forged one asks for its answer elsewhere: a gate answers only on its own response topic.
            asked = "qrgate/v1/device/gate-elsewhere/response" if case == "forged" else None
            topic, data, answer = requester.ask(payload, correlation,
                                                response_topic=asked or wire.command_response_topic(DEVICE))
            assert (case, answer.outcome) == (case, reason)
            assert (topic, data, answer.device_id) == (wire.command_response_topic(DEVICE), correlation, DEVICE)
        assert foreign_answer_names_the_command(requester, foreign.nonce)
        assert daemon.poll() is None  # none of the refused restarts did anything

        # The other commands, over one connection of the sender.
        with CommandSender(settings) as sender:
            def ask(name: str, **args: str) -> CommandResponse:
                command = new_command(name, DEVICE, "lan", args=args)
                return sender.send(DEVICE, sign_command(operator_key, command).to_json(), nonce=command.nonce,
                                   timeout_s=30)

            self_test = ask("self_test")
            checks = {check["name"]: check for check in self_test.result["checks"]}  # type: ignore[union-attr]
            assert self_test.outcome == "done" and list(checks) == ["clock", "disk", "camera", "outbox", "trust",
                                                                    "broker"]
            assert checks["camera"]["ok"] and "decoded" in checks["camera"]["detail"]
            assert checks["broker"]["ok"] and checks["trust"]["ok"] and checks["outbox"]["ok"]
            flush = ask("flush_outbox")
            assert flush.outcome == "done" and isinstance(flush.result["pending"], int)
            reload = ask("reload_trust")  # this gate has static anchors only: nothing to reload, and it says so
            assert reload.outcome == "failed" and "trust.signers_dir is not set" in reload.detail
            assert ask("set_log_level", level="warning").outcome == "done"
            assert ask("set_log_level", level="LOUD").outcome == "bad_argument"

        restart = send_command(settings, operator_key, new_command("restart", DEVICE, "lan"), timeout_s=20)
        assert (restart.outcome, restart.result) == ("done", {"exit_status": os.EX_TEMPFAIL})
        assert daemon.wait(30) == os.EX_TEMPFAIL == 75
    finally:
        requester.close()
    log = (tmp_path / "gate.log").read_text()
    for line in ("command status from operator lan: done", "command ? from operator ?: bad_signature",
                 "command restart from operator lan: expired", "command status from operator lan: replayed",
                 "command restart from operator lan: wrong_device", "restart ordered by an operator"):
        assert line in log, line
    assert {topic for topic, _data, _answer in requester.answers} == {wire.command_response_topic(DEVICE)}
    assert retained(broker.host, broker.port, wire.availability_topic(DEVICE)).payload == b"offline"  # clean stop


def foreign_answer_names_the_command(requester: Requester, nonce: str) -> bool:
    """A refusal after the signature verified names the command it refused (its nonce, for the operator's logs)."""
    return any(answer.outcome == "wrong_device" and answer.nonce == nonce for _t, _d, answer in requester.answers)


class SiteGate:
    """A gate's answers, in memory: the broker chain, the uplink and the command handler around it are real."""

    def command_status(self) -> dict[str, object]:
        return {"behind": "the site bridge"}

    def command_self_test(self) -> dict[str, object]:
        return {}

    def command_reload_trust(self) -> dict[str, object]:
        return {}

    def command_flush_outbox(self) -> dict[str, object]:
        return {}

    def command_restart(self) -> dict[str, object]:
        return {}


def test_only_the_operator_writes_a_gates_command_topic_and_commands_cross_the_site_bridge(tmp_path: Path) -> None:
    site = "market-1"
    with Chain(tmp_path, site_id=site, sites={site: ("gate-a",)}, operators=("operator",)) as chain:
        chain.wait_for_bridge()
        gate = Requester(chain.site.host, chain.site.port, client_id="gate-a",
                         tls=chain.pki.paho_tls(chain.credential("gate-a")))
        operator = Requester(chain.province.host, chain.province.port, client_id="operator",
                             tls=chain.pki.paho_tls(chain.credential("operator")))
        try:
            gate.subscribe(wire.command_topic("gate-a"))
            # The gate's own certificate, at its site broker and at the province: its command and ack topics are
            # not its to write.
            assert gate.publish(wire.command_topic("gate-a"), b"self-command") == "Not authorized"
            assert gate.publish(wire.ack_topic("gate-a"), b"{}") == "Not authorized"
            direct = Requester(chain.province.host, chain.province.port, client_id="gate-a-direct",
                               tls=chain.pki.paho_tls(chain.credential("gate-a")))
            try:
                assert direct.publish(wire.command_topic("gate-a"), b"self-command") == "Not authorized"
            finally:
                direct.close()
            # The operator may, and the command crosses the bridge down to the gate ...
            assert operator.publish(wire.command_topic("gate-a"), b"signed-command") == "Success"
            wait_until(lambda: gate.on(wire.command_topic("gate-a")), 10, "the operator's command at the gate")
            # ... whose answer, on its own response topic, crosses it up to the operator.
            answer = CommandResponse(device_id="gate-a", outcome="done", time=wire.iso_utc(time.time()))
            assert gate.publish(wire.command_response_topic("gate-a"), answer.to_json()) in ACCEPTED
            wait_until(lambda: operator.answers, 10, "the gate's answer at the province")
        finally:
            gate.close()
            operator.close()
        # A signed command through the bridge to a gate's real uplink and handler: MQTT 3.1.1 between the brokers
        # carries no properties, so the gate answers on its own response topic without correlation data and the
        # sender matches the answer by the command's nonce.
        key = new_operator_key(tmp_path / "ops.key", "ops-1")
        (tmp_path / "operators.json").write_text(operator_keys_file([key]))
        handler = CommandHandler(CommandAuthenticator("gate-a", OperatorKeys.load(tmp_path / "operators.json"),
                                                      NonceStore(tmp_path / "nonces.sqlite")), SiteGate())
        credential = chain.credential("operator")
        settings = BrokerSettings(host=chain.province.host, port=chain.province.port, ca_file=chain.pki.ca_file,
                                  cert_file=credential.cert, key_file=credential.key)
        with Outbox(tmp_path / "outbox.sqlite") as outbox, \
                gate_uplink(outbox, "gate-a", chain.site, chain.pki, chain.credential("gate-a"),
                            commands=handler.handle) as uplink:
            wait_until(lambda: uplink.stats.connected, 10, "gate-a's uplink at its site broker")
            bridged = send_command(settings, key, new_command("status", "gate-a", "lan"), timeout_s=20)
    assert (bridged.outcome, bridged.device_id, bridged.result) == ("done", "gate-a", {"behind": "the site bridge"})
    assert gate.on(wire.command_topic("gate-a")) == [b"signed-command"]  # the gate's own attempt never reached it
    assert [(topic, response.device_id) for topic, _data, response in operator.answers] == [
        (wire.command_response_topic("gate-a"), "gate-a")]


def test_check_config_finds_an_unusable_operator_key_file(tmp_path: Path, operator_key: OperatorKey) -> None:
    def remote_problems(keys: Path) -> list[str]:
        config = GateConfig(remote=RemoteConfig(operator_keys=str(keys), nonces_path=str(tmp_path / "n.sqlite")))
        return [problem for problem in preflight(config) if problem.startswith("remote.")]

    assert remote_problems(tmp_path / "operators.json") == []
    (tmp_path / "garbage.json").write_text('{"keys": [{"kid": "k"}]}')
    assert remote_problems(tmp_path / "absent.json") == [
        f"remote.operator_keys: {tmp_path / 'absent.json'}: no such file (remote.operator_keys)"]
    [garbage] = remote_problems(tmp_path / "garbage.json")
    assert garbage.startswith(f"remote.operator_keys: {tmp_path / 'garbage.json'}: not an operator key list")
    assert [problem for problem in preflight(GateConfig()) if problem.startswith("remote.")] == []  # commands off
