"""The site and provincial broker configurations, rendered from firmware/mosquitto/ and run by the
real mosquitto: who may publish and read what, the bridge in both directions, refused certificates.

Every broker here runs the exact files ``qrgate_provisioning.brokerconf`` writes, with test
parameters (loopback, free ports, a PKI made at test time, a short bridge backoff).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from faults import Chain, FarEnd, TestPki, gate_uplink
from mqtt_helpers import Subscriber, make_event, wait_until
from qrgate import wire
from qrgate.errors import ConfigError
from qrgate.outbox import Outbox
from qrgate_provisioning import brokerconf
from qrgate_provisioning.brokerconf import (
    ProvincialBroker,
    SiteBroker,
    TlsFiles,
    render_provincial_acl,
    render_provincial_broker,
    render_site_acl,
    render_site_broker,
)

SITE = "market-1"
GATES = ("gate-a", "gate-b")
OTHER_SITE_GATE = "gate-z"  # a gate of another site
ACCEPTED = ("Success", "No matching subscribers")  # PUBACK reason codes that mean the broker took it
ACL_PATTERN_WARNING = "does not contain '%c' or '%u'"  # logged by mosquitto each time it reads the ACL file
TLS = TlsFiles("/etc/mosquitto/certs/ca.pem", "/etc/mosquitto/certs/server.pem", "/etc/mosquitto/certs/server.key")
BRIDGE_TLS = TlsFiles("/etc/mosquitto/certs/province-ca.pem", "/etc/mosquitto/certs/bridge.pem",
                      "/etc/mosquitto/certs/bridge.key")


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with Chain(tmp_path, site_id=SITE, sites={SITE: GATES, "market-2": (OTHER_SITE_GATE,)},
               operators=("operator",), issuers=("issuer",)) as running:
        running.wait_for_bridge()
        yield running


class Client:
    """A bare paho MQTT v5 client with a certificate, recording acknowledgements and messages."""

    def __init__(self, chain: Chain, broker_port: int, cn: str) -> None:
        self.pubacks: list[str] = []
        self.subacks: list[list[str]] = []
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cn, protocol=mqtt.MQTTv5)
        self._client.tls_set(**chain.pki.paho_tls(chain.credential(cn)))
        self._client.on_publish = lambda _c, _u, _mid, reason, _p: self._record(self.pubacks, str(reason))
        self._client.on_subscribe = lambda _c, _u, _mid, reasons, _p: self._record(
            self.subacks, [str(r) for r in reasons])
        self._client.on_message = lambda _c, _u, message: self._record(
            self.messages, (message.topic, bytes(message.payload)))
        self._client.connect("127.0.0.1", broker_port)
        self._client.loop_start()

    def _record(self, into: list, item: object) -> None:
        with self._lock:
            into.append(item)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> str:
        before = len(self.pubacks)
        self._client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: len(self.pubacks) > before, 5, f"the PUBACK for {topic}")
        return self.pubacks[before]

    def subscribe(self, topic: str) -> list[str]:
        before = len(self.subacks)
        self._client.subscribe(topic, qos=1)
        wait_until(lambda: len(self.subacks) > before, 5, f"the SUBACK for {topic}")
        return self.subacks[before]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# ---- rendering --------------------------------------------------------------------------------


def user_blocks(acl: str) -> dict[str, list[str]]:
    """Each ``user`` section of an ACL file: its rule lines, comments left out."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in acl.splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line.removeprefix("user "), [])
        elif not line.strip():
            current = None
        elif current is not None and not line.startswith("#"):
            current.append(line)
    return blocks


def site_params(**overrides: object) -> SiteBroker:
    return dataclasses.replace(SiteBroker(site_id=SITE, province_host="broker.province.example",
                                          listener_tls=TLS, bridge_tls=BRIDGE_TLS), **overrides)


def test_the_site_configuration_carries_the_bridge_and_listener_settings_the_design_relies_on() -> None:
    text = render_site_broker(site_params())
    for line in (
        "listener 8883 0.0.0.0", "require_certificate true", "use_identity_as_username true",
        "use_username_as_clientid true", "allow_anonymous false", "acl_file /etc/mosquitto/qrgate.acl",
        "persistence true", "autosave_on_changes true", "autosave_interval 100", "max_queued_messages 100000",
        "connection province", "address broker.province.example:8883", f"remote_clientid site-{SITE}",
        "bridge_protocol_version mqttv311", "cleansession false", "bridge_attempt_unsubscribe false",
        "restart_timeout 5 60", "keepalive_interval 60", "notifications true",
        f"notification_topic qrgate/v1/site/{SITE}/bridge", "bridge_insecure false",
        "bridge_certfile /etc/mosquitto/certs/bridge.pem", "log_dest stderr", "user mosquitto",
        "topic qrgate/v1/device/+/checkin out 1", "topic qrgate/v1/device/+/ack in 1",
        "topic qrgate/v1/device/+/command in 1", "topic qrgate/v1/device/+/response out 1",
        "topic qrgate/v1/province/trust-list in 1", "topic qrgate/v1/province/revocation in 1",
        "topic qrgate/v1/province/rules in 1", "topic qrgate/v1/province/hello in 0",
    ):
        assert line in text.splitlines(), line
    assert "$" not in text  # every placeholder filled
    # What crosses into the site: exactly the province-wide topics a gate subscribes to, never the daily report.
    brought_in = {line.split()[1] for line in text.splitlines()
                  if line.startswith("topic qrgate/v1/province/") and line.split()[2] == "in"}
    assert brought_in == {wire.TRUST_LIST_TOPIC, wire.REVOCATION_TOPIC, wire.RULE_SET_TOPIC, wire.PROVINCE_HELLO_TOPIC}
    acl = render_site_acl(site_params(readers=("checkin-log",)))
    assert "pattern read qrgate/v1/device/%u/#" in acl.splitlines()
    # A gate writes what it says, never its own ack or command topic (only the province writes those).
    assert [line for line in acl.splitlines() if line.startswith("pattern write")] == [
        f"pattern write qrgate/v1/device/%u/{leaf}" for leaf in ("checkin", "status", "available", "telemetry",
                                                                  "response")]
    assert "readwrite" not in acl and "/command" not in acl and "/ack" not in acl
    assert user_blocks(acl) == {"checkin-log": [
        "topic deny qrgate/v1/device/checkin-log/#", "topic read qrgate/v1/device/+/checkin",
        "topic read qrgate/v1/device/+/status", "topic read qrgate/v1/device/+/available",
        f"topic read qrgate/v1/site/{SITE}/bridge",
    ]}


def test_the_provincial_acl_confines_each_site_bridge_to_its_own_gates() -> None:
    province = ProvincialBroker(listener_tls=TLS, sites={SITE: GATES, "market-2": (OTHER_SITE_GATE,)},
                                consumers=("backend",), operators=("operator",), issuers=("issuer",))
    acl = render_provincial_acl(province)
    blocks = user_blocks(acl)
    def gate_grants(gate: str) -> list[str]:
        return [f"topic read qrgate/v1/device/{gate}/#", *(f"topic write qrgate/v1/device/{gate}/{leaf}" for leaf in
                                                           ("checkin", "status", "available", "telemetry", "response"))]

    assert blocks[f"site-{SITE}"] == [
        f"topic deny qrgate/v1/device/site-{SITE}/#", f"topic write qrgate/v1/site/{SITE}/bridge",
        *gate_grants("gate-a"), *gate_grants("gate-b"),
    ]
    assert blocks["site-market-2"][2:] == gate_grants(OTHER_SITE_GATE)
    for user in ("backend", "operator", "issuer"):
        assert blocks[user][0] == f"topic deny qrgate/v1/device/{user}/#"
    assert "topic write qrgate/v1/device/+/ack" in blocks["backend"]
    assert blocks["issuer"][1:] == ["topic readwrite qrgate/v1/province/#"]
    assert "pattern read qrgate/v1/device/%u/#" in acl and "pattern write qrgate/v1/device/%u/response" in acl
    # Only operators write command topics.
    assert [line for line in acl.splitlines() if "/command" in line and not line.startswith("#")] == [
        "topic write qrgate/v1/device/+/command"]
    rendered = render_provincial_broker(province).splitlines()
    assert "listener 8883 0.0.0.0" in rendered
    # the province saves on a timer (a save per N changes grows with the square of a backlog: docs/scale.md)
    assert "autosave_on_changes false" in rendered and "autosave_interval 30" in rendered


@pytest.mark.parametrize(("make", "message"), [
    (lambda: site_params(site_id="market/1"), "not a valid id"),
    (lambda: site_params(site_id="market+"), "not a valid id"),
    (lambda: site_params(site_id="m" * 60), "bridge CN"),
    (lambda: site_params(province_host="prov ince"), "not a host name"),
    (lambda: site_params(port=0), "not a TCP port"),
    (lambda: site_params(acl_file="relative/acl"), "absolute path"),
    (lambda: site_params(persistence_dir="/var/lib/my broker"), "without spaces"),
    (lambda: site_params(restart_timeout_s=(0, 60)), "1 <= base <= cap"),
    (lambda: site_params(restart_timeout_s=(60, 5)), "1 <= base <= cap"),
    (lambda: site_params(bridge_keepalive_s=2), "at least 5"),
    (lambda: site_params(autosave_changes=0), "autosave_changes"),
    (lambda: site_params(bridge_protocol="mqttv5"), "not one of mqttv311, mqttv50"),
    (lambda: site_params(readers=(f"site-{SITE}",)), "name of this site's bridge"),
    (lambda: site_params(listener_tls=TlsFiles("ca.pem", "/s.pem", "/s.key")), "listener_tls.ca_file"),
])
def test_bad_site_parameters_are_refused_with_the_reason(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_site_broker(make())


@pytest.mark.parametrize(("sites", "roles", "message"), [
    ({"m1": ("gate#1",)}, {}, "not a valid id"),
    ({"m1": ("gate-a",), "m2": ("gate-a",)}, {}, "is both a gate of site m1 and a gate of site m2"),
    ({"m1": ("site-m2",), "m2": ("g",)}, {}, "one certificate CN cannot be two clients"),
    ({"m1": ("gate-a",)}, {"operators": ("gate-a",)}, "is both a gate of site m1 and an operator"),
    ({"m1": ("gate-a",)}, {"consumers": ("%u",)}, "not a valid id"),
])
def test_bad_provincial_parameters_are_refused_with_the_reason(sites, roles, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_provincial_acl(ProvincialBroker(listener_tls=TLS, sites=sites, **roles))


def test_the_cli_writes_both_files_for_a_site_and_for_the_province(tmp_path: Path, capsys) -> None:
    import argparse

    from qrgate_provisioning.commands import broker_config

    parser = argparse.ArgumentParser(prog="qrgate-issuer")
    broker_config.add_parser(parser.add_subparsers(dest="command", required=True))
    inventory = tmp_path / "gates.csv"
    inventory.write_text("site_id,device_id\nmarket-2,gate-z\n")
    args = parser.parse_args(["broker-config", "province", "--out", str(tmp_path / "province"),
                              "--site", f"{SITE}=gate-a,gate-b", "--sites-csv", str(inventory),
                              "--consumer", "backend", "--operator", "operator"])
    assert args.run(args) == 0
    acl = (tmp_path / "province" / "qrgate.acl").read_text()
    assert "user site-market-2\n" in acl and "qrgate/v1/device/gate-z/#" in acl and "user backend\n" in acl
    args = parser.parse_args(["broker-config", "site", "--out", str(tmp_path / "site"), "--site-id", SITE,
                              "--province-host", "10.0.0.5", "--restart-timeout", "3", "30"])
    assert args.run(args) == 0
    assert "restart_timeout 3 30" in (tmp_path / "site" / "mosquitto.conf").read_text()
    assert "the bridge's certificate CN must be site-market-1" in capsys.readouterr().out
    args = parser.parse_args(["broker-config", "site", "--out", str(tmp_path / "bad"), "--site-id", "a b",
                              "--province-host", "10.0.0.5"])
    with pytest.raises(ConfigError, match="not a valid id"):
        args.run(args)


# ---- the running brokers ----------------------------------------------------------------------


def test_a_gate_publishes_its_own_topics_and_they_cross_the_bridge(chain: Chain, tmp_path: Path) -> None:
    operator = Subscriber(chain.province.host, chain.province.port, ["qrgate/v1/device/#"], client_id="operator",
                          **chain.pki.paho_tls(chain.credential("operator")))
    with operator, Outbox(tmp_path / "outbox.sqlite") as outbox:
        ids = [outbox.append(lambda seq: make_event(seq, "gate-a")).event_id for _ in range(5)]
        with gate_uplink(outbox, "gate-a", chain.site, chain.pki, chain.credential("gate-a")) as uplink:
            wait_until(lambda: outbox.pending_count() == 0, 10, "PUBACKs from the site broker")
            assert uplink.stats.refused == 0
            wait_until(lambda: len(operator.on(wire.checkin_topic("gate-a"))) == 5, 10, "the check-ins at the province")
            wait_until(lambda: operator.on(wire.availability_topic("gate-a")), 5, "the birth message at the province")
        gate = Client(chain, chain.site.port, "gate-a")
        try:
            assert gate.publish(wire.telemetry_topic("gate-a"), b'{"v":1}') in ACCEPTED
        finally:
            gate.close()
        wait_until(lambda: operator.on(wire.telemetry_topic("gate-a")), 5, "telemetry at the province")
    assert [wire.CheckinEvent.from_json(m.payload).event_id for m in operator.on(wire.checkin_topic("gate-a"))] == ids
    assert operator.on(wire.status_topic("gate-a"))


def test_publishing_on_another_gates_topic_is_refused_with_puback_0x87(chain: Chain) -> None:
    gate = Client(chain, chain.site.port, "gate-a")
    with FarEnd.at_province(chain) as far:
        try:
            assert gate.publish(wire.checkin_topic("gate-b"), make_event(1, "gate-b").to_json()) == "Not authorized"
            assert gate.publish(wire.ack_topic("gate-b"), b"{}") == "Not authorized"
            assert gate.publish(wire.TRUST_LIST_TOPIC, b"forged", retain=True) == "Not authorized"
            assert gate.publish(f"qrgate/v1/site/{SITE}/bridge", b"1", retain=True) == "Not authorized"
            own = make_event(1, "gate-a")
            assert gate.publish(wire.checkin_topic("gate-a"), own.to_json()) in ACCEPTED
            far.wait_for([own.event_id], 10, "gate-a's own check-in at the province")
        finally:
            gate.close()
        assert far.unique_ids() == {own.event_id}  # the refused one never left the site broker


def test_subscribing_to_other_gates_topics_delivers_nothing(chain: Chain) -> None:
    snoop = Client(chain, chain.site.port, "gate-a")
    victim = Client(chain, chain.site.port, "gate-b")
    reader = Client(chain, chain.site.port, "site-probe")  # a site reader: allowed to read check-ins
    try:
        # mosquitto 2.0.11 grants every SUBSCRIBE and checks each delivery against the read rules.
        codes = snoop.subscribe(wire.checkin_topic("gate-b")) + snoop.subscribe(wire.ALL_CHECKINS) \
            + snoop.subscribe(wire.ack_topic("gate-b"))
        assert set(codes) <= {"Granted QoS 1", "Not authorized"}
        reader.subscribe(wire.ALL_CHECKINS)
        event = make_event(1, "gate-b")
        assert victim.publish(wire.checkin_topic("gate-b"), event.to_json()) == "Success"
        wait_until(lambda: reader.messages, 5, "the reader's copy")
        own = make_event(1, "gate-a")
        snoop.publish(wire.checkin_topic("gate-a"), own.to_json())
        wait_until(lambda: len(reader.messages) == 2, 5, "gate-a's own check-in at the reader")
        # gate-a's subscriptions match its own check-in too; that is all it may see.
        wait_until(lambda: snoop.messages, 5, "gate-a's own check-in back at gate-a")
        time.sleep(0.3)  # a wrongly delivered copy would travel with the allowed one
        assert {topic for topic, _ in snoop.messages} == {wire.checkin_topic("gate-a")}
    finally:
        for client in (snoop, victim, reader):
            client.close()


def test_province_lists_acks_and_commands_flow_down_only_to_their_gates(chain: Chain, tmp_path: Path) -> None:
    issuer = Client(chain, chain.province.port, "issuer")
    backend = Client(chain, chain.province.port, "backend")
    operator = Client(chain, chain.province.port, "operator")
    gate_a = Client(chain, chain.site.port, "gate-a")
    stranger = Client(chain, chain.site.port, OTHER_SITE_GATE)  # a gate of market-2 at market-1's broker
    trust_lists: list[bytes] = []
    try:
        for client, cn in ((gate_a, "gate-a"), (stranger, OTHER_SITE_GATE)):
            client.subscribe(wire.ack_topic(cn))
            client.subscribe(f"qrgate/v1/device/{cn}/command")
        assert issuer.publish(wire.TRUST_LIST_TOPIC, b"\xd2signed-list-v3", retain=True) == "Success"
        assert backend.publish(wire.ack_topic("gate-a"), b'{"v":1,"event_ids":["e1"]}') == "Success"
        assert backend.publish(wire.ack_topic(OTHER_SITE_GATE), b'{"v":1,"event_ids":["e2"]}') in ACCEPTED
        assert operator.publish("qrgate/v1/device/gate-a/command", b"reboot") == "Success"
        assert backend.publish(wire.TRUST_LIST_TOPIC, b"forged") == "Not authorized"

        with Outbox(tmp_path / "outbox.sqlite") as outbox:
            uplink = gate_uplink(outbox, "gate-b", chain.site, chain.pki, chain.credential("gate-b"),
                                 subscriptions={wire.TRUST_LIST_TOPIC: lambda _t, payload: trust_lists.append(payload)})
            with uplink:
                wait_until(lambda: trust_lists, 10, "the retained trust list at gate-b's uplink")
        wait_until(lambda: len(gate_a.messages) == 2, 10, "gate-a's ack and command")
        time.sleep(0.3)
        assert sorted(topic for topic, _ in gate_a.messages) == [wire.ack_topic("gate-a"),
                                                                 "qrgate/v1/device/gate-a/command"]
        assert stranger.messages == []  # the province never gave market-1's bridge another site's ack
        assert trust_lists == [b"\xd2signed-list-v3"]
    finally:
        for client in (issuer, backend, operator, gate_a, stranger):
            client.close()


@pytest.mark.parametrize("certificate", ["expired", "foreign CA"])
def test_a_client_certificate_that_is_expired_or_from_another_ca_is_refused_at_tls(
    chain: Chain, tmp_path: Path, certificate: str
) -> None:
    if certificate == "expired":
        credential = chain.pki.expired_client("gate-a")
    else:
        credential = TestPki(tmp_path / "impostor", "impostor CA").client("gate-a")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gate-a", protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    # The gate trusts the right CA for the broker; only its own certificate is wrong.
    client.tls_set(ca_certs=str(chain.pki.ca_file), certfile=str(credential.cert), keyfile=str(credential.key))
    connacks: list[object] = []
    lost = threading.Event()
    client.on_connect = lambda *args: connacks.append(args[3])
    client.on_disconnect = lambda *args: lost.set()
    try:
        client.connect(chain.site.host, chain.site.port)  # TLS 1.3: the server's verdict comes after the handshake
        client.loop_start()
        assert lost.wait(5), "the broker kept a connection with a bad client certificate"
    except OSError:
        pass  # refused within the handshake itself: just as good
    finally:
        client.loop_stop()
    assert connacks == []
    wait_until(lambda: "certificate verify failed" in chain.site.log_tail(20), 5, "the broker's reason in its log")


def test_a_gate_not_listed_for_its_site_is_dropped_at_the_province_until_the_acl_is_reloaded(chain: Chain) -> None:
    # market-1's bridge may speak only for gate-a and gate-b; gate-c is new at the site.
    newcomer = Client(chain, chain.site.port, "gate-c")
    listed = Client(chain, chain.site.port, "gate-a")
    with FarEnd.at_province(chain) as far:
        try:
            early = make_event(1, "gate-c")
            # The site broker takes it (its ACL confines gates by pattern, not by list) ...
            assert newcomer.publish(wire.checkin_topic("gate-c"), early.to_json()) in ACCEPTED
            # ... and the bridge passes messages on in order: once a later one has arrived, the
            # province has answered the first.
            marker = make_event(1, "gate-a")
            assert listed.publish(wire.checkin_topic("gate-a"), marker.to_json()) in ACCEPTED
            far.wait_for([marker.event_id], 10, "a listed gate's check-in behind the newcomer's")
            params = dataclasses.replace(chain.province_params, sites={SITE: (*GATES, "gate-c")})
            brokerconf.write_provincial_broker(params, chain.province.config_path.parent)
            # SIGHUP: mosquitto re-reads its ACL file and the bridge stays connected. Reading the
            # file logs the warning about the pattern without %u again: then the new rules are in force.
            warnings = chain.province.log_tail(200).count(ACL_PATTERN_WARNING)
            chain.province.reload()
            wait_until(lambda: chain.province.log_tail(200).count(ACL_PATTERN_WARNING) > warnings, 5, "the ACL reload")
            late = make_event(2, "gate-c")
            assert newcomer.publish(wire.checkin_topic("gate-c"), late.to_json()) in ACCEPTED
            far.wait_for([late.event_id], 10, "gate-c's check-in once the province's ACL lists it")
        finally:
            newcomer.close()
            listed.close()
        far.settle()
    # The province refused the first one from the bridge, which dropped it: without end-to-end
    # acks nothing sends it again.
    assert far.unique_ids() == {marker.event_id, late.event_id}


@pytest.mark.parametrize(("protocol", "kept"), [("mqttv311", True), ("mqttv50", False)])
def test_what_the_province_sends_while_the_site_is_away_waits_only_for_a_311_bridge(
    tmp_path: Path, protocol: str, kept: bool
) -> None:
    """Why the bridge speaks MQTT 3.1.1: mosquitto 2.0.11's v5 bridge connects with clean start off
    but no Session Expiry Interval, so the province ends its session at every disconnect and drops
    what it sends the site meanwhile (eclipse-mosquitto/mosquitto#2424). Pinned here so that a
    mosquitto that fixes it shows up, and mqttv50 can become the default."""
    with Chain(tmp_path, site_id=SITE, sites={SITE: GATES}, bridge_protocol=protocol) as chain:
        chain.wait_for_bridge()
        gate = Subscriber(chain.site.host, chain.site.port, [wire.ack_topic("gate-a")], client_id="gate-a",
                          persistent=True, **chain.pki.paho_tls(chain.credential("gate-a")))
        backend = Client(chain, chain.province.port, "backend")
        with gate:
            try:
                assert backend.publish(wire.ack_topic("gate-a"), b"before") == "Success"
                wait_until(lambda: gate.on(wire.ack_topic("gate-a")), 5, "the ack while the bridge is up")
                chain.site.stop()
                wait_until(lambda: f"Client site-{SITE} closed its connection" in chain.province.log_tail(20), 5,
                           "the province to see the bridge go")
                backend.publish(wire.ack_topic("gate-a"), b"while away")
                chain.site.restart()
                chain.wait_for_bridge()
                assert backend.publish(wire.ack_topic("gate-a"), b"after") == "Success"
                wait_until(lambda: b"after" in [m.payload for m in gate.on(wire.ack_topic("gate-a"))], 10,
                           "the ack sent after the bridge is back")
            finally:
                backend.close()
        received = [m.payload for m in gate.on(wire.ack_topic("gate-a"))]
    print(f"\n[{protocol} bridge] acks received by the gate: {received}")
    assert received == ([b"before", b"while away", b"after"] if kept else [b"before", b"after"])
